"""Tests for inception/detection/voc.py: the VOC reader on the embedded BCCD data and on a folder of every bad case."""
import logging
import pathlib
import re

import numpy as np
import pytest

from inception.detection import voc
from inception.errors import DataError
from tests.detection.voc_folders import annotation_xml
from tests.detection.voc_folders import jpeg
from tests.detection.voc_folders import write_voc

REPO = pathlib.Path(__file__).resolve().parents[2]
BCCD = REPO / 'data' / 'bccd'
BCCD_CLASSES = ('RBC', 'WBC', 'Platelets')


def _objects_in_xml(image_ids):
  """(class name, xmin, ymin, xmax, ymax) of every <object> of these annotation files, by regular expression: a
  reading independent of the parser under test."""
  found = []
  for image_id in image_ids:
    text = (BCCD / 'Annotations' / f'{image_id}.xml').read_text()
    for obj in re.findall(r'<object>(.*?)</object>', text, re.S):
      coords = [float(re.search(rf'<{k}>\s*([^<]+?)\s*</{k}>', obj).group(1)) for k in ('xmin', 'ymin', 'xmax', 'ymax')]
      found.append((re.search(r'<name>\s*([^<]+?)\s*</name>', obj).group(1), *coords))
  return found


def test_bccd_every_split_accounts_for_every_box():
  """Images per split as in its split file, and every <object> either kept or left out as degenerate; over train,
  val and test, the class totals of the dataset's description (shared/data/README.md)."""
  totals = {name: 0 for name in BCCD_CLASSES}
  for split in ('train', 'val', 'test'):
    result = voc.load_split(str(BCCD), split, BCCD_CLASSES, decode_images=False)
    ids = (BCCD / 'ImageSets' / 'Main' / f'{split}.txt').read_text().split()
    assert [r.image_id for r in result.records] == ids
    objects = _objects_in_xml(ids)
    degenerate = [o for o in objects if o[3] <= o[1] or o[4] <= o[2]]
    assert result.tally.count('degenerate_box') == len(degenerate)
    assert sum(result.box_counts().values()) == len(objects) - len(degenerate)
    assert set(result.tally.counts()) == set(voc.LEFT_OUT) | set(voc.KEPT)
    assert sum(result.tally.counts().values()) == len(degenerate)  # nothing else left out or changed
    for name in BCCD_CLASSES:
      totals[name] += sum(1 for o in objects if o[0] == name)
    for record in result.records:
      assert (record.width, record.height) == (640, 480)
      assert (record.boxes[:, :2] >= 0).all()
      assert (record.boxes[:, 2] <= 640).all() and (record.boxes[:, 3] <= 480).all()
      assert (record.boxes[:, 2:] > record.boxes[:, :2]).all()
      assert [BCCD_CLASSES[l] for l in record.labels] == list(record.names)
  assert totals == {'RBC': 4155, 'WBC': 372, 'Platelets': 361}


def test_bccd_boxes_are_the_xml_corners_shifted_to_continuous_pixels():
  result = voc.load_split(str(BCCD), 'test', BCCD_CLASSES, decode_images=True)
  record = result.records[0]
  objects = _objects_in_xml([record.image_id])
  np.testing.assert_array_equal(record.boxes, [[x0 - 1, y0 - 1, x1, y1] for _, x0, y0, x1, y1 in objects])
  assert record.names == tuple(o[0] for o in objects)
  assert record.path == str(BCCD / 'JPEGImages' / f'{record.image_id}.jpg')


def _bad_folder(root):
  """Every bad case of the issue, one image each, all in the split 'all'."""
  good = [('a', 1, 1, 10, 20, 0), ('b', 5.5, 6, 30.5, 24, 1)]
  images = {
      'good': ((40, 30), good),
      'empty': ((40, 30), []),
      'clip': ((40, 30), [('a', -4, 0, 20, 35, 0), ('b', 2, 2, 9, 9, 0)]),
      'outside': ((40, 30), [('a', 50, 5, 60, 9, 0), ('a', 3, 3, 8, 8, 0)]),
      'degenerate': ((40, 30), [('a', 7, 3, 7, 9, 0), ('b', 9, 9, 4, 12, 0), ('b', 1, 1, 5, 5, 0)]),
      'unknown': ((40, 30), [('cat', 1, 1, 10, 10, 0), ('a', 1, 1, 10, 10, 0)]),
      'resized': ((40, 30), [('a', 1, 1, 10, 10, 0)]),
      'truncated': ((40, 30), [('a', 1, 1, 10, 10, 0)]),
      'text': ((40, 30), [('a', 1, 1, 10, 10, 0)]),
      'noimage': ((40, 30), [('a', 1, 1, 10, 10, 0)]),
      'notxml': ((40, 30), []),
      'nonnumeric': ((40, 30), []),
      'nobox': ((40, 30), []),
  }
  ids = list(images) + ['noxml', 'good']
  root = write_voc(root, images, {'all': ids})
  (root / 'JPEGImages' / 'resized.jpg').write_bytes(jpeg(20, 15))
  whole = (root / 'JPEGImages' / 'truncated.jpg').read_bytes()
  (root / 'JPEGImages' / 'truncated.jpg').write_bytes(whole[:len(whole) // 2])
  (root / 'JPEGImages' / 'text.jpg').write_text('not an image\n')
  (root / 'JPEGImages' / 'noimage.jpg').unlink()
  (root / 'Annotations' / 'notxml.xml').write_text('<annotation><object><name>a</name>')
  (root / 'Annotations' / 'nonnumeric.xml').write_text(
      annotation_xml('nonnumeric.jpg', (40, 30), [('a', 'left', 1, 10, 10, 0)]))
  (root / 'Annotations' / 'nobox.xml').write_text(
      '<annotation><size><width>40</width><height>30</height></size><object><name>a</name></object></annotation>')
  return root


def test_every_bad_case_is_left_out_or_kept_named_and_counted(tmp_path, caplog):
  root = _bad_folder(tmp_path / 'voc')
  with caplog.at_level(logging.INFO):
    result = voc.load_split(str(root), 'all', ('a', 'b'), decode_images=True)
  kept = {r.image_id: r for r in result.records}
  assert sorted(kept) == ['clip', 'degenerate', 'empty', 'good', 'outside', 'unknown']
  expected = {'missing_annotation': ['noxml'], 'malformed_annotation': ['notxml', 'nonnumeric', 'nobox'],
              'missing_image': ['noimage'], 'undecodable_image': ['truncated', 'text'], 'size_mismatch': ['resized'],
              'repeated_id': ['good'], 'degenerate_box': ['degenerate', 'degenerate'], 'outside_box': ['outside'],
              'unknown_class': ['unknown'], 'clipped_box': ['clip'], 'no_boxes': ['empty']}
  assert result.tally.counts() == {k: len(v) for k, v in expected.items()}
  for reason, ids in expected.items():  # each item named by its image
    assert [any(re.match(rf'.*\b{i}\b', n) for n in result.tally.names(reason)) for i in ids] == [True] * len(ids)

  # The good image: continuous coordinates, float corners, the difficult flag, names and labels.
  np.testing.assert_array_equal(kept['good'].boxes, [[0, 0, 10, 20], [4.5, 5, 30.5, 24]])
  assert kept['good'].labels.tolist() == [0, 1] and kept['good'].names == ('a', 'b')
  assert kept['good'].difficult.tolist() == [False, True]
  # Clipped to the image (xmin -4 -> x0 0; ymax 35 -> 30), the inside box untouched.
  np.testing.assert_array_equal(kept['clip'].boxes, [[0, 0, 20, 30], [1, 1, 9, 9]])
  # Left-out boxes do not take their image's other boxes with them.
  np.testing.assert_array_equal(kept['outside'].boxes, [[2, 2, 8, 8]])
  np.testing.assert_array_equal(kept['degenerate'].boxes, [[0, 0, 5, 5]])
  assert kept['unknown'].names == ('a',)
  assert len(kept['empty'].labels) == 0 and kept['empty'].boxes.shape == (0, 4)

  lines = [r for r in caplog.records if 'VOC split' in r.getMessage()]
  assert len(lines) == 1 and lines[0].levelno == logging.WARNING
  message = lines[0].getMessage()
  assert '\n' not in message
  for phrase in list(voc.LEFT_OUT.values()) + list(voc.KEPT.values()):
    assert phrase in message
  assert 'cat (1, 1, 10, 10)' in message and 'notxml.xml' in message


def test_header_only_check_keeps_a_truncated_image_but_not_a_text_file(tmp_path):
  root = _bad_folder(tmp_path / 'voc')
  result = voc.load_split(str(root), 'all', ('a', 'b'), decode_images=False)
  assert 'truncated' in {r.image_id for r in result.records}
  assert result.tally.count('undecodable_image') == 1 and 'text.jpg' in result.tally.names('undecodable_image')[0]


def test_without_a_class_list_every_name_is_a_class_in_every_split(tmp_path):
  """Classes from all the folder's annotations, sorted, so a split that lacks one still indexes the same way."""
  root = _bad_folder(tmp_path / 'voc')
  (root / 'ImageSets' / 'Main' / 'one.txt').write_text('clip\n')
  result = voc.load_split(str(root), 'all', (), decode_images=False)
  assert result.class_names == ('a', 'b', 'cat')
  assert result.tally.count('unknown_class') == 0
  assert result.box_counts()['cat'] == 1
  assert voc.load_split(str(root), 'one', (), decode_images=False).class_names == ('a', 'b', 'cat')


def test_errors_that_stop_before_reading(tmp_path):
  root = write_voc(tmp_path / 'voc', {'x': ((20, 20), [('a', 1, 1, 5, 5, 0)])}, {'train': ['x']})
  with pytest.raises(DataError, match='not a VOC folder'):
    voc.load_split(str(tmp_path / 'nowhere'), 'train', ('a',), decode_images=False)
  with pytest.raises(DataError, match=r'No split file .*test\.txt; the splits there: train'):
    voc.load_split(str(root), 'test', ('a',), decode_images=False)
  with pytest.raises(DataError, match='repeated'):
    voc.load_split(str(root), 'train', ('a', 'a'), decode_images=False)
  (root / 'JPEGImages' / 'x.jpg').unlink()
  with pytest.raises(DataError, match=r'No usable image .*missing images: 1 \(.*x\.jpg'):
    voc.load_split(str(root), 'train', ('a',), decode_images=False)


def test_image_found_by_id_when_the_xml_names_another_file(tmp_path):
  root = write_voc(tmp_path / 'voc', {'x': ((20, 20), [('a', 1, 1, 5, 5, 0)])}, {'train': ['x']})
  (root / 'JPEGImages' / 'x.jpg').rename(root / 'JPEGImages' / 'x.png')  # PIL reads by content, not name
  (root / 'Annotations' / 'x.xml').write_text(annotation_xml('elsewhere.jpg', None, [('a', 1, 1, 5, 5, 0)]))
  record, = voc.load_split(str(root), 'train', ('a',), decode_images=True).records
  assert record.path.endswith('x.png') and (record.width, record.height) == (20, 20)  # no <size>: the image's

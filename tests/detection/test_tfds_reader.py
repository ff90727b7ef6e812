"""Tests for inception/detection/tfds_reader.py through datasets.load_split: real TFDS datasets prepared on disk from
five BCCD images (tfds_builders.py: `voc`'s layout and `coco`'s), read back and compared with voc.py's reading of the
same VOC folder."""
import pathlib
import shutil

from etils import epath
import numpy as np
import pytest

from inception import config_checks
from inception.detection import datasets
from inception.detection import proposals
from inception.detection import regions
from inception.detection import tfds_reader
from inception.detection import voc
from inception.errors import DataError
from inception.errors import UserError
from tests.detection import tfds_builders
from tests.services.gcs import gcs, gcs_emulator  # noqa: F401  pylint: disable=unused-import  (fixtures)

pytestmark = pytest.mark.xdist_group('tfds_reader')  # one worker prepares the datasets (the module fixture) once

BCCD = pathlib.Path(__file__).resolve().parents[2] / 'data' / 'bccd'
CLASSES = ('RBC', 'WBC', 'Platelets')  # configs/detection.py:bccd's order, not the datasets' (tfds_builders.CLASSES)
SPLITS = {'train': ['BloodImage_00001', 'BloodImage_00003', 'BloodImage_00004'], 'val': ['BloodImage_00005'],
          'test': ['BloodImage_00006']}
# Added to the copied annotations: a degenerate box (left out), one from the image's left edge (VOC xmin 0: clipped)
# and a difficult one (COCO's layout reads difficult as crowd).
EXTRA = {'BloodImage_00001': '<object><name>RBC</name><difficult>0</difficult><bndbox><xmin>100</xmin><ymin>50</ymin>'
                             '<xmax>100</xmax><ymax>90</ymax></bndbox></object>',
         'BloodImage_00003': '<object><name>WBC</name><difficult>0</difficult><bndbox><xmin>0</xmin><ymin>10</ymin>'
                             '<xmax>40</xmax><ymax>60</ymax></bndbox></object>',
         'BloodImage_00004': '<object><name>Platelets</name><difficult>1</difficult><bndbox><xmin>200</xmin>'
                             '<ymin>200</ymin><xmax>230</xmax><ymax>228</ymax></bndbox></object>'}


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  """(the VOC folder, the TFDS data dir holding bccd_voc_like and bccd_coco_like)."""
  tmp = tmp_path_factory.mktemp('tfds')
  folder = tmp / 'voc'
  for sub in ('Annotations', 'JPEGImages', 'ImageSets/Main'):
    (folder / sub).mkdir(parents=True)
  for split, ids in SPLITS.items():
    (folder / 'ImageSets' / 'Main' / f'{split}.txt').write_text(''.join(f'{i}\n' for i in ids))
    for i in ids:
      shutil.copy(BCCD / 'JPEGImages' / f'{i}.jpg', folder / 'JPEGImages')
      xml = (BCCD / 'Annotations' / f'{i}.xml').read_text()
      (folder / 'Annotations' / f'{i}.xml').write_text(xml.replace('</annotation>', EXTRA.get(i, '') + '</annotation>'))
  data_dir = tmp / 'tensorflow_datasets'
  for builder in (tfds_builders.BccdVocLike, tfds_builders.BccdCocoLike):
    builder.SOURCE = str(folder)
    builder(data_dir=str(data_dir)).download_and_prepare()
    builder.SOURCE = ''
  return folder, data_dir


def _config(data_dir, name, **overrides):
  c = config_checks.load_config('configs/detection.py')
  c.detection_data.update({'format': 'tfds', 'tfds_name': name, 'tfds_data_dir': str(data_dir), 'classes': CLASSES,
                           'decode_images': True, **overrides})
  return c


def _by_id(split):
  return {r.image_id: r for r in split.records}


def _assert_same_records(tfds_split, voc_split, difficult=None):
  mine, theirs = _by_id(tfds_split), _by_id(voc_split)
  assert sorted(mine) == sorted(theirs)
  for image_id, r in mine.items():
    v = theirs[image_id]
    assert (r.width, r.height) == (v.width, v.height)
    np.testing.assert_allclose(r.boxes, v.boxes, rtol=0, atol=1e-9)
    assert r.labels.tolist() == v.labels.tolist() and r.names == v.names
    assert r.difficult.tolist() == (v.difficult if difficult is None else difficult(r)).tolist()
    assert pathlib.Path(r.path).read_bytes() == pathlib.Path(v.path).read_bytes()  # exported byte for byte


def test_voc_layout_reads_as_the_voc_reader_and_exports_once(prepared):
  folder, data_dir = prepared
  c = _config(data_dir, 'bccd_voc_like')
  train = datasets.load_split(c.detection_data, 'train')
  reference = voc.load_split(str(folder), 'train', CLASSES, decode_images=True)
  assert train.class_names == CLASSES and train.exported == 3
  _assert_same_records(train, reference)
  assert train.tally.counts() == {**reference.tally.counts(), 'crowd_box': 0}
  assert train.tally.count('degenerate_box') == 1 and train.tally.count('clipped_box') == 1
  assert sum(int(r.difficult.sum()) for r in train.records) == 1
  export = data_dir / 'detection_images' / 'bccd_voc_like' / '1.0.0' / 'train'
  assert {pathlib.Path(r.path).parent for r in train.records} == {export}
  assert 'TFDS split' in train.summary() and 'boxes of zero or negative width or height: 1' in train.summary()

  stamps = {p.name: p.stat().st_mtime_ns for p in export.iterdir()}
  again = datasets.load_split(c.detection_data, 'train')
  assert again.exported == 0 and {p.name: p.stat().st_mtime_ns for p in export.iterdir()} == stamps
  _assert_same_records(again, reference)

  val = datasets.load_split(c.detection_data, 'val')  # TFDS's 'validation'
  assert [r.image_id for r in val.records] == SPLITS['val']
  assert (data_dir / 'detection_images' / 'bccd_voc_like' / '1.0.0' / 'validation' / tfds_reader.MANIFEST).is_file()
  _assert_same_records(val, voc.load_split(str(folder), 'val', CLASSES, decode_images=True))


def test_coco_layout_reads_crowd_as_difficult_and_refuses_the_unlabelled_test_split(prepared, tmp_path):
  folder, data_dir = prepared
  c = _config(data_dir, 'bccd_coco_like', classes=(), tfds_export_dir=str(tmp_path / 'exports'))
  train = datasets.load_split(c.detection_data, 'train')
  assert train.class_names == tfds_builders.CLASSES  # the dataset's order when no class list is given
  assert {pathlib.Path(r.path).parent for r in train.records} == {tmp_path / 'exports' / 'bccd_coco_like' / '1.0.0' /
                                                                   'train'}
  reference = voc.load_split(str(folder), 'train', tfds_builders.CLASSES, decode_images=True)
  _assert_same_records(train, reference)  # the builder wrote VOC's difficult box as crowd; it reads back difficult
  assert train.tally.count('crowd_box') == 1 and 'crowd boxes (marked difficult): 1' in train.summary()
  assert train.tally.count('degenerate_box') == 1
  assert train.tally.count('clipped_box') == 0  # COCO's continuous box starts at 0, inside the image
  with pytest.raises(DataError, match='no boxes at all'):
    datasets.load_split(c.detection_data, 'test')


def test_an_exported_file_gone_is_tallied_and_a_cut_export_is_redone(prepared, tmp_path):
  _, data_dir = prepared
  c = _config(data_dir, 'bccd_voc_like', tfds_export_dir=str(tmp_path))
  first = datasets.load_split(c.detection_data, 'train')
  pathlib.Path(first.records[0].path).unlink()
  second = datasets.load_split(c.detection_data, 'train')
  assert second.exported == 0 and len(second.records) == 2 and second.tally.count('missing_image') == 1
  (tmp_path / 'bccd_voc_like' / '1.0.0' / 'train' / tfds_reader.MANIFEST).unlink()  # as an export cut short
  third = datasets.load_split(c.detection_data, 'train')
  assert third.exported == 3 and len(third.records) == 3


def test_the_export_goes_to_a_gs_folder(prepared, gcs):
  """A gs:// export root on the Cloud Storage emulator (tests/services/gcs.py): written once, read back through it."""
  folder, data_dir = prepared
  c = _config(data_dir, 'bccd_voc_like', tfds_export_dir=f'{gcs}/exports')
  first = datasets.load_split(c.detection_data, 'val')
  record, = first.records
  assert first.exported == 1 and record.path == f'{gcs}/exports/bccd_voc_like/1.0.0/validation/{SPLITS["val"][0]}.jpg'
  again = datasets.load_split(c.detection_data, 'val')
  assert again.exported == 0
  reference, = voc.load_split(str(folder), 'val', CLASSES, decode_images=True).records
  np.testing.assert_allclose(again.records[0].boxes, reference.boxes, rtol=0, atol=1e-9)
  assert epath.Path(record.path).read_bytes() == pathlib.Path(reference.path).read_bytes()


def test_proposals_and_regions_settings_read_through_the_dispatcher(prepared, tmp_path):
  _, data_dir = prepared
  c = _config(data_dir, 'bccd_voc_like', tfds_export_dir=str(tmp_path / 'exports'))
  c.workdir = str(tmp_path / 'work')
  c.proposals.workers = 1
  data, run, result = proposals.build(c, 'val')
  assert [r.image_id for r in data.records] == SPLITS['val'] and result['images'] == 1 and run.computed == 1
  assert regions.settings(c, data.class_names)['detection_data']['root'] == 'tfds:bccd_voc_like'


def test_bad_settings_are_named(prepared, tmp_path):
  _, data_dir = prepared
  with pytest.raises(UserError, match="format='coco'"):
    datasets.load_split(_config(data_dir, 'bccd_voc_like', format='coco').detection_data, 'train')
  with pytest.raises(DataError, match="No TFDS dataset 'bccd_voc_like/2007'"):
    datasets.load_split(_config(data_dir, 'bccd_voc_like/2007').detection_data, 'train')
  with pytest.raises(DataError, match='tfds_name'):
    datasets.load_split(_config(data_dir, '').detection_data, 'train')
  with pytest.raises(DataError, match=r'not prepared .*tfds build bccd_voc_like --data_dir='):
    datasets.load_split(_config(tmp_path / 'empty', 'bccd_voc_like').detection_data, 'train')
  with pytest.raises(DataError, match="no split 'nope'.*train, validation, test"):
    datasets.load_split(_config(data_dir, 'bccd_voc_like').detection_data, 'nope')
  with pytest.raises(DataError, match=r"not in bccd_voc_like/1.0.0 \(\['cat'\]\)"):
    datasets.load_split(_config(data_dir, 'bccd_voc_like', classes=('RBC', 'cat')).detection_data, 'train')


def test_the_catalogue_voc_and_coco_read_as_their_layouts(tmp_path):
  """TFDS's own builders (their features come from code; nothing is downloaded or prepared)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  voc_layout, box_format, names = tfds_reader.layout_of(tfds.builder('voc/2007', data_dir=str(tmp_path)).info.features,
                                                        'voc/2007')
  assert (voc_layout, box_format) == (tfds_reader.Layout('voc', True, 'is_difficult'), 'REL_YXYX') and len(names) == 20
  coco_layout, box_format, _ = tfds_reader.layout_of(tfds.builder('coco/2017', data_dir=str(tmp_path)).info.features,
                                                     'coco/2017')
  assert (coco_layout, box_format) == (tfds_reader.Layout('coco', False, 'is_crowd'), 'REL_YXYX')
  with pytest.raises(DataError, match='not a detection layout'):
    tfds_reader.layout_of(tfds.builder('mnist', data_dir=str(tmp_path)).info.features, 'mnist')


def test_split_names_and_box_conventions():
  assert tfds_reader.tfds_split(['train', 'validation', 'test'], 'val') == 'validation'
  assert tfds_reader.tfds_split(['train', 'validation'], 'trainval') == 'train+validation'
  assert tfds_reader.tfds_split(['train', 'val'], 'val') == 'val'  # a dataset's own name wins
  assert tfds_reader.tfds_split(['train'], 'train[:10%]') == 'train[:10%]'
  # float32 fractions of VOC's integers and COCO's two decimals come back exact.
  box = np.array([[48 / 480, 116.95 / 640, 480 / 480, 402.25 / 640]], np.float32)
  assert tfds_reader.corners(box.tolist(), 'REL_YXYX', 640, 480).tolist() == [[116.95, 48.0, 402.25, 480.0]]
  assert tfds_reader.corners(box[:, [1, 0, 3, 2]].tolist(), 'REL_XYXY', 640, 480).tolist() == [[116.95, 48.0, 402.25,
                                                                                                 480.0]]
  assert datasets.source(config_checks.load_config('configs/detection.py:bccd').detection_data) == 'data/bccd'

"""Tests for inception/detection/proposal_cache.py: computed once, served from the cache, recomputed when the setting
or the image changes or the file is damaged, bad images counted, and the process pool."""
import pathlib

import numpy as np
from PIL import Image

from inception import config_checks
from inception.detection import image_check
from inception.detection import proposal_cache
from inception.detection import selective_search
from inception.detection.records import ImageRecord


def _params(**changes):
  c = config_checks.load_config('configs/detection.py:bccd').proposals
  c.update(changes)
  return selective_search.Params.from_config(c)


def _records(folder: pathlib.Path, n: int):
  """n small PNGs of coloured boxes on grey (a different layout each), with their records (no ground truth)."""
  records = []
  for i in range(n):
    image = np.full((80, 100, 3), 120, np.uint8)
    image[10 + 5 * i:50, 10:40 + 5 * i] = (220, 40, 40)
    image[30:70, 60:90] = (40, 40, 220)
    path = folder / f'img{i}.png'
    Image.fromarray(image).save(path)
    records.append(ImageRecord(f'img{i}', str(path), 100, 80, np.zeros([0, 4]), np.zeros([0], np.int32), (),
                               np.zeros([0], bool)))
  return records


def _same(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])


def test_computed_once_in_a_pool_then_served_from_the_cache(tmp_path):
  records = _records(tmp_path, 3)
  params = _params()
  first = proposal_cache.proposals_for(records, params, tmp_path / 'cache', workers=2)
  assert (first.computed, first.cached, first.workers) == (3, 0, 2)
  folder = pathlib.Path(first.folder)
  assert folder.name == f'selective_search-{params.key()}' and (folder / 'params.json').is_file()
  assert len(list(folder.glob('img*.npz'))) == 3
  for record in records:  # the pool's boxes are the ones computed here
    here = selective_search.propose(image_check.read_rgb(record.path), params)
    assert sorted(map(tuple, here.tolist())) == sorted(map(tuple, first.boxes[record.image_id].tolist()))
  again = proposal_cache.proposals_for(records, params, tmp_path / 'cache', workers=2)
  assert (again.computed, again.cached) == (0, 3)
  _same(first.boxes, again.boxes)
  assert sum(again.tally.counts().values()) == 0


def test_a_changed_setting_or_image_is_recomputed(tmp_path):
  records = _records(tmp_path, 2)
  proposal_cache.proposals_for(records, _params(), tmp_path / 'cache', workers=1)
  other = proposal_cache.proposals_for(records, _params(sigma=0.5), tmp_path / 'cache', workers=1)
  assert (other.computed, other.cached) == (2, 0)
  assert len(list((tmp_path / 'cache').glob('selective_search-*'))) == 2
  image = np.asarray(Image.open(records[0].path)).copy()
  image[:20, :20] = 0  # the same file name, new content
  Image.fromarray(image).save(records[0].path)
  changed = proposal_cache.proposals_for(records, _params(), tmp_path / 'cache', workers=1)
  assert (changed.computed, changed.cached) == (1, 1)
  assert (0, 0, 20, 20) in set(map(tuple, changed.boxes['img0'].tolist()))


def test_a_damaged_cache_file_is_named_and_recomputed(tmp_path):
  records = _records(tmp_path, 2)
  first = proposal_cache.proposals_for(records, _params(), tmp_path / 'cache', workers=1)
  damaged = sorted(pathlib.Path(first.folder).glob('img0-*.npz'))[0]
  damaged.write_bytes(b'garbage')
  second = proposal_cache.proposals_for(records, _params(), tmp_path / 'cache', workers=1)
  assert (second.computed, second.cached) == (1, 1)
  assert second.tally.count('corrupt_cache') == 1 and damaged.name in second.tally.names('corrupt_cache')[0]
  assert 'cache files that did not read (recomputed): 1' in second.summary()
  third = proposal_cache.proposals_for(records, _params(), tmp_path / 'cache', workers=1)  # rewritten whole
  assert (third.computed, third.cached) == (0, 2)
  _same(second.boxes, third.boxes)


def test_a_file_written_for_other_keys_is_not_served(tmp_path):
  file = tmp_path / 'x.npz'
  proposal_cache.write_boxes(file, np.array([[0, 0, 30, 30]]), 'settingA', 'imageA')
  np.testing.assert_array_equal(proposal_cache.read_boxes(file, 'settingA', 'imageA'), [[0, 0, 30, 30]])
  for keys in (('settingB', 'imageA'), ('settingA', 'imageB')):
    try:
      proposal_cache.read_boxes(file, *keys)
      raise AssertionError('served boxes written for other keys')
    except proposal_cache.CorruptCache as e:
      assert 'written for setting settingA and image imageA' in str(e)


def test_bad_images_are_named_counted_and_left_without_proposals(tmp_path):
  records = _records(tmp_path, 2)
  (tmp_path / 'broken.jpg').write_bytes(b'\xff\xd8 not really a jpeg')
  broken = ImageRecord('broken', str(tmp_path / 'broken.jpg'), 100, 80, np.zeros([0, 4]), np.zeros([0], np.int32),
                       (), np.zeros([0], bool))
  missing = ImageRecord('missing', str(tmp_path / 'missing.jpg'), 100, 80, np.zeros([0, 4]),
                        np.zeros([0], np.int32), (), np.zeros([0], bool))
  run = proposal_cache.proposals_for(records + [broken, missing], _params(), tmp_path / 'cache', workers=2)
  assert sorted(run.boxes) == ['img0', 'img1']
  assert run.tally.count('undecodable_image') == 1 and 'broken.jpg' in run.tally.names('undecodable_image')[0]
  assert run.tally.count('missing_image') == 1 and 'missing.jpg' in run.tally.names('missing_image')[0]
  assert 'images that do not decode: 1' in run.summary() and 'missing images: 1' in run.summary()


BCCD = pathlib.Path(__file__).resolve().parents[2] / 'data' / 'bccd'


def test_the_shipped_bccd_boxes_are_what_selective_search_computes_now():
  """data/bccd/proposals holds the :bccd setting's boxes of all 364 images (the README's commands read them and compute
  none): two recomputed here are the same boxes, so a change to Selective Search cannot leave them stale unseen."""
  params = _params()
  config = config_checks.load_config('configs/detection.py:bccd')
  shipped = proposal_cache.cache_folder(BCCD.parent.parent / config.proposals.read_only_cache_dir, params)
  assert shipped.is_dir(), (
      f'No shipped boxes for the :bccd setting ({params.as_dict()}) in {shipped.parent}: after changing the setting or '
      f'OpenCV, run `python -m inception.detect proposals --config=configs/detection.py:bccd '
      f'--config.proposals.cache_dir=data/bccd/proposals` and replace the old folder with the new one.')
  files = sorted(shipped.glob('*.npz'))
  assert len(files) == len(list((BCCD / 'JPEGImages').glob('*.jpg'))) == 364
  for image_id in ('BloodImage_00007', 'BloodImage_00300'):
    path = BCCD / 'JPEGImages' / f'{image_id}.jpg'
    digest = proposal_cache.image_digest(path)
    boxes, problem, _ = proposal_cache._compute(str(path), params)  # pylint: disable=protected-access
    assert problem is None
    name = proposal_cache._file_name(image_id, digest)  # pylint: disable=protected-access
    stored = proposal_cache.read_boxes(shipped / name, params.key(), digest)
    # The same boxes; their order follows OpenCV's pseudo-random ranking, which differs from call to call.
    np.testing.assert_array_equal(np.unique(stored, axis=0), np.unique(boxes, axis=0))


def test_a_read_only_root_is_read_and_never_written(tmp_path):
  records = _records(tmp_path, 2)
  params = _params()
  shipped = proposal_cache.proposals_for(records[:1], params, tmp_path / 'shipped', workers=1)
  before = sorted(p.name for p in (tmp_path / 'shipped').rglob('*'))
  run = proposal_cache.proposals_for(records, params, tmp_path / 'cache', workers=1,
                                     read_only_roots=['', str(tmp_path / 'shipped')])
  assert (run.cached, run.computed) == (1, 1)
  _same({'img0': run.boxes['img0']}, shipped.boxes)
  assert sorted(p.name for p in (tmp_path / 'shipped').rglob('*')) == before
  written = proposal_cache.cache_folder(tmp_path / 'cache', params).glob('*.npz')
  assert [p.name.split('-')[0] for p in written] == ['img1']

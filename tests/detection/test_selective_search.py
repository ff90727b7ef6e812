"""Tests for inception/detection/selective_search.py: Selective Search on drawn shapes and on real BCCD images."""
import numpy as np
import pytest

from inception import config_checks
from inception.detection import boxes as box_ops
from inception.detection import coverage
from inception.detection import image_check
from inception.detection import selective_search
from inception.detection import voc


def _params(**changes):
  c = config_checks.load_config('configs/detection.py:bccd').proposals
  c.update(changes)
  return selective_search.Params.from_config(c)


def _rows(boxes):
  return set(map(tuple, np.asarray(boxes).tolist()))


def shapes_image() -> np.ndarray:
  """Grey, with a red square over pixel columns 20..59 and rows 30..69 and a blue box over columns 70..109, rows
  10..39: in continuous coordinates (20, 30, 60, 70) and (70, 10, 110, 40)."""
  image = np.full((100, 120, 3), 128, np.uint8)
  image[30:70, 20:60] = (200, 30, 30)
  image[10:40, 70:110] = (30, 30, 200)
  return image


def test_the_config_holds_rcnn_fast_mode_with_doubled_superpixels():
  params = _params()
  assert params == selective_search.Params(('hsv', 'lab'), (100, 200), 1.0, 0.8, ('CTSF', 'TSF'), 20)
  assert _params(ks=(50, 100)).ks == (50, 100)


def test_drawn_shapes_are_found_exactly_in_continuous_pixels():
  found = selective_search.propose(shapes_image(), _params())
  assert {(20, 30, 60, 70), (70, 10, 110, 40), (0, 0, 120, 100)} <= _rows(found)
  assert len(_rows(found)) == len(found)  # no duplicates


def test_boxes_under_min_box_size_are_dropped_and_only_those():
  noise = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
  every = selective_search.propose(noise, _params(min_box_size=1))
  kept = selective_search.propose(noise, _params(min_box_size=20))
  sizes = every[:, 2:] - every[:, :2]
  assert (sizes < 20).any()  # the filter has something to drop
  assert _rows(kept) == _rows(every[(sizes >= 20).all(axis=1)])


@pytest.mark.parametrize('key, value, message', [
    ('color_spaces', ('hsv', 'xyz'), 'color_spaces'),
    ('ks', (), 'ks'),
    ('strategies', ('CTSX',), 'strategies'),
    ('strategies', ('CC',), 'strategies'),
    ('min_box_size', 0, 'min_box_size'),
    ('sigma', -1.0, 'sigma'),
])
def test_unusable_settings_name_their_key(key, value, message):
  with pytest.raises(config_checks.ConfigError, match=rf'proposals\.{message}='):
    _params(**{key: value})


def test_every_setting_changes_the_key():
  base = _params()
  changed = [_params(ks=(50, 100)), _params(sigma=0.5), _params(color_spaces=('hsv',)), _params(strategies=('TSF',)),
             _params(min_box_size=10), _params(min_segment_size_factor=0.5)]
  keys = {base.key()} | {p.key() for p in changed}
  assert len(keys) == 1 + len(changed) and base.key() == _params().key()


def test_bccd_images_inside_big_enough_and_fewer_with_doubled_superpixels():
  """Two real test images: boxes inside 640x480, at least 20 px, hundreds to a few thousand of them, fewer at k
  {100, 200} than at R-CNN's {50, 100}, and most cells covered at IoU 0.5."""
  split = voc.load_split('data/bccd', 'test', ('RBC', 'WBC', 'Platelets'), decode_images=False)
  records = split.records[:2]
  counts = {}
  for ks in ((50, 100), (100, 200)):
    for record in records:
      found = selective_search.propose(image_check.read_rgb(record.path), _params(ks=ks))
      assert (found[:, :2] >= 0).all() and (found[:, 2] <= 640).all() and (found[:, 3] <= 480).all()
      assert (found[:, 2:] - found[:, :2] >= 20).all()
      assert 200 < len(found) < 5000
      assert coverage.covered(record.boxes, found, 0.5).mean() > 0.6
      counts[ks, record.image_id] = len(found)
  for record in records:
    assert counts[(100, 200), record.image_id] < 0.8 * counts[(50, 100), record.image_id]


def test_propose_refuses_what_is_not_an_rgb_image():
  with pytest.raises(ValueError, match='uint8'):
    selective_search.propose(np.zeros((10, 10), np.uint8), _params())
  assert box_ops.area(selective_search.propose(np.zeros((40, 40, 3), np.uint8), _params())).min() >= 400

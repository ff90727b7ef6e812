"""Tests for inception/detection/proposals.py: `build` from the config on a small VOC folder (the command:
tests/test_detect.py)."""
import json
import pathlib

import pytest

from inception import config_checks
from inception.detection import proposals
from inception.errors import UserError
from tests.detection.voc_folders import write_voc

REPO = pathlib.Path(__file__).resolve().parents[2]


def _folder(tmp_path):
  """Three 64x48 noise images, each with a box over the whole image (Selective Search's last region always covers
  it) and a 5x5 box (no proposal of 20 px or more overlaps it by half)."""
  objects = [('cat', 1, 1, 64, 48, 0), ('dog', 10, 10, 14, 14, 0)]
  return write_voc(tmp_path / 'voc', {f'im{i}': ((64, 48), objects) for i in range(3)}, {'test': ['im0', 'im1', 'im2']})


def test_build_reads_the_split_proposes_caches_and_measures(tmp_path):
  c = config_checks.load_config('configs/detection.py')
  c.detection_data.root = str(_folder(tmp_path))
  c.proposals.workers = 1
  c.workdir = str(tmp_path / 'work')
  data, run, result = proposals.build(c, 'test')
  assert len(data.records) == 3 and sorted(run.boxes) == ['im0', 'im1', 'im2']
  assert pathlib.Path(run.folder).parent == tmp_path / 'work' / 'proposals'
  assert (result['boxes'], result['covered']) == (6, 3)
  assert result['classes']['cat']['recall'] == 1.0 and result['classes']['dog']['recall'] == 0.0
  assert result['proposals_per_image'] == sum(len(b) for b in run.boxes.values()) / 3
  assert result['params']['ks'] == (100, 200) and result['computed'] == 3
  json.dumps(result)  # JSON-ready
  c.proposals.cache_dir = str(tmp_path / 'elsewhere')
  _, again, _ = proposals.build(c, 'test')
  assert pathlib.Path(again.folder).parent == tmp_path / 'elsewhere' and again.computed == 3


def test_no_cache_place_is_a_user_error():
  c = config_checks.load_config('configs/detection.py:bccd')
  c.workdir = ''
  with pytest.raises(UserError, match='--config.workdir'):
    proposals.cache_root(c)

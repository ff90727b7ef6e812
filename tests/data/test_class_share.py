"""Tests for inception/data/class_share.py: every global batch holds the class's share, spread over the processes'
rows; each class's examples come once per pass of its stream; the order resumes exactly and is the same on any number
of processes."""
import types

import numpy as np
import pytest

from inception.config_checks import ConfigError
from inception.data import class_share

LABELS = [0, 1, 1, 2, 1, 1, 1, 0, 1, 1, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1]  # label 1 is the "background": 15 of 20


def _take(count, **kw):
  ds = class_share.class_share_order(LABELS, 1, 6, seed=3, global_batch=8, **kw)
  return [tuple(int(x) for x in t) for t in ds.take(count).as_numpy_iterator()]


def test_every_global_batch_holds_the_share_and_each_stream_passes_over_its_examples():
  one = _take(8 * 30, process_index=0, process_count=1)
  assert [i for i, _, _ in one] == [p for _, p, _ in one] == list(range(240))
  batches = np.array([e for _, _, e in one]).reshape(30, 8)
  labels = np.asarray(LABELS)[batches]
  assert ((labels == 1).sum(axis=1) == 6).all()  # 6 of 8 rows background, in every batch
  assert (labels == 1).tolist()[0] == class_share.rows_of_class(6, 8).tolist()
  for stream, ids in ((batches[labels == 1], np.flatnonzero(np.asarray(LABELS) == 1)),
                      (batches[labels != 1], np.flatnonzero(np.asarray(LABELS) != 1))):
    passes = stream[:len(stream) // len(ids) * len(ids)].reshape(-1, len(ids))
    # Each pass holds every example once.
    assert len(passes) >= 10 and all(sorted(q) == ids.tolist() for q in passes.tolist())
    assert len({tuple(q) for q in passes.tolist()}) > 1  # in another order each pass

def test_two_processes_take_their_rows_of_the_same_batches_and_resume_exactly():
  one = _take(8 * 12, process_index=0, process_count=1)
  halves = [_take(4 * 12, process_index=p, process_count=2) for p in range(2)]
  merged = sorted(halves[0] + halves[1], key=lambda t: t[1])
  assert [(p, e) for _, p, e in merged] == [(p, e) for _, p, e in one]
  assert [i for i, _, _ in halves[1]] == list(range(48))
  later = _take(4 * 5, process_index=1, process_count=2, start_index=4 * 7)
  assert later == halves[1][4 * 7:4 * 12]


def test_a_bad_setting_is_a_config_error_naming_the_fix():
  names = ['Platelets', 'RBC', 'WBC', 'background']
  assert class_share.check(('background', 0.75), names, 64) == (3, 48)
  with pytest.raises(ConfigError, match="'backdrop', which is not a training class"):
    class_share.check(('backdrop', 0.75), names, 64)
  with pytest.raises(ConfigError, match='leaves the other classes no row'):
    class_share.check(('background', 0.99), names, 8)
  with pytest.raises(ConfigError, match=r'expected \(class name, share of each batch\)'):
    class_share.check(('background',), names, 8)


def test_train_batches_of_an_image_folder_carry_the_share(small_images, tmp_path):
  from inception.data import pipeline  # pylint: disable=import-outside-toplevel
  from inception.data.sources import build_source  # pylint: disable=import-outside-toplevel
  from tests.runs import tiny_config  # pylint: disable=import-outside-toplevel
  config = tiny_config(small_images, tmp_path / 'run')
  config.data.class_share = ('Motorbikes', 0.25)
  source = build_source(config)
  motorbikes = source.class_names.index('Motorbikes')
  batches = pipeline.train_batches(config, process_index=0, process_count=1, source=source)
  for _ in range(3):
    batch = next(batches)
    assert len(batch['label']) == 8 and (batch['label'] == motorbikes).sum() == 2 and batch['mask'].all()
  in_order = types.SimpleNamespace(random_access=False, num_examples=lambda split: 100, load=lambda record: record)
  with pytest.raises(ConfigError, match='needs the labels of every training example up front'):
    pipeline.train_batches(config, process_index=0, process_count=1, source=in_order)  # a TFDS TFRecord source


def test_a_class_without_examples_is_a_config_error():
  with pytest.raises(ConfigError, match=r'no training example is of the chosen class \(label 5\)'):
    class_share.class_share_order(LABELS, 5, 6, seed=0, global_batch=8, process_index=0, process_count=1)

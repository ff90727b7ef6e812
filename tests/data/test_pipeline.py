"""Tests for inception/data/pipeline.py: batch shapes, determinism, O(1) and elastic resume, masked bad images, eval
padding."""
import collections
import itertools
import pathlib

import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from inception.data import pipeline
from inception.errors import DataError
from tests.data.image_folders import make_folder

IMAGE_SIZE = 16


def make_config(root, **overrides) -> ml_collections.ConfigDict:
  """The full config the training loop passes, shrunk for tests."""
  config = ml_collections.ConfigDict(dict(
      seed=0, batch_size=8, eval_batch_size=10,
      data=dict(source='folder', root=str(root), val_fraction=0.0, tfds_name='imagenet2012',
                tfds_data_dir=None, train_split='train', eval_split='validation', shuffle_buffer=16,
                max_bad_fraction=0.01, rows_per_task=4, tasks_per_core=2),
      pp=dict(image_size=IMAGE_SIZE, value_range=(-1.0, 1.0),
              train=dict(name='inception_crop', area_range=(0.08, 1.0), aspect_range=(3 / 4, 4 / 3),
                         flip=True, interpolations=('bilinear', 'bicubic', 'area', 'nearest'),
                         brightness=32 / 255, contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue=0.2,
                         max_attempts=10, crop_sampler='uniform_area'),
              eval=dict(name='central_crop', crop_ratio=0.875))))
  config.update(overrides)
  return config


@pytest.fixture
def folder(tmp_path):
  """30 training images in 3 classes."""
  make_folder(tmp_path, {'a': 10, 'b': 12, 'c': 8})
  return tmp_path


def take(iterator, n):
  """The first n batches of an iterator."""
  return list(itertools.islice(iterator, n))


def test_train_batch_shapes_and_values(folder):
  batches = take(pipeline.train_batches(make_config(folder), process_index=0, process_count=1), 5)
  for batch in batches:
    assert set(batch) == {'image', 'label', 'index', 'seed', 'mask'}
    np.testing.assert_array_equal(batch['mask'], np.ones(8, np.float32))
    assert batch['image'].shape == (8, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert batch['image'].dtype == np.uint8  # the host's part; the step distorts and scales (tests/test_augment.py)
    assert batch['seed'].dtype == np.uint32 and batch['seed'].shape == (8, 2)
    assert batch['label'].dtype == np.int32 and batch['label'].shape == (8,)
    assert batch['index'].dtype == np.int64
  indices = np.concatenate([b['index'] for b in batches])
  np.testing.assert_array_equal(indices, np.arange(40))  # Endless: 40 > 30 images.
  seeds = np.concatenate([b['seed'] for b in batches])
  assert len({tuple(s) for s in seeds}) == 40  # each read of an example distorts anew
  labels = np.concatenate([b['label'] for b in batches])
  assert collections.Counter(labels[:30].tolist()) == {0: 10, 1: 12, 2: 8}  # Epoch 1 = every image.


def test_train_is_deterministic_for_a_seed(folder):

  def run(config):
    return take(pipeline.train_batches(config, process_index=0, process_count=1), 3)

  first, again = run(make_config(folder)), run(make_config(folder))
  other = run(make_config(folder, seed=1))
  for a, b in zip(first, again):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  assert not np.array_equal(first[0]['image'], other[0]['image'])


def test_resume_reproduces_the_uninterrupted_stream(folder):
  config = make_config(folder)
  full = take(pipeline.train_batches(config, process_index=0, process_count=1), 6)
  resumed = take(pipeline.train_batches(config, process_index=0, process_count=1, start_step=2), 4)
  for a, b in zip(full[2:], resumed):  # Crosses the epoch boundary at 30.
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_train_global_batches_do_not_depend_on_the_process_count(folder):
  """Process p reads rows [p*b, (p+1)*b) of each global batch: the processes' batches side by side are the one-process
  stream, images (augmentation included) and all, across the epoch boundary at 30."""
  config = make_config(folder)
  whole = take(pipeline.train_batches(config, process_index=0, process_count=1), 5)
  parts = [take(pipeline.train_batches(config, process_index=i, process_count=2), 5) for i in range(2)]
  for k, batch in enumerate(whole):
    for key in ('image', 'label', 'seed'):  # the seeds of the on-device distortions too
      np.testing.assert_array_equal(batch[key], np.concatenate([parts[0][k][key], parts[1][k][key]]))
    assert parts[0][k]['image'].shape == (4, IMAGE_SIZE, IMAGE_SIZE, 3)
    np.testing.assert_array_equal(parts[1][k]['index'], np.arange(4 * k, 4 * k + 4))  # local positions
  first_epoch = np.concatenate([b['label'] for b in whole])[:30].tolist()
  assert collections.Counter(first_epoch) == {0: 10, 1: 12, 2: 8}  # every image once per epoch
  with pytest.raises(ValueError, match='divisible'):
    pipeline.train_batches(config, process_index=0, process_count=3)


def test_global_order_resumes_and_reshuffles_each_epoch():
  def run(**kw):
    ds = pipeline.global_order(10, 3, global_batch=4, process_count=2, **kw)
    return [tuple(int(v) for v in x) for x in ds.take(12).as_numpy_iterator()]

  p0, p1 = run(process_index=0), run(process_index=1)
  positions = sorted(x[1] for x in p0 + p1)
  assert positions == list(range(24))  # the two processes tile the global stream
  assert [x[0] for x in p1] == list(range(12))
  by_position = {x[1]: x[2] for x in p0 + p1}
  epochs = [[by_position[i] for i in range(10 * e, 10 * e + 10)] for e in range(2)]
  assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(10)) and epochs[0] != epochs[1]
  assert run(process_index=1, start_index=5)[:7] == p1[5:]
  assert run(process_index=0, start_index=11)[:1] == p0[11:]


def test_global_order_starts_late_in_a_large_split_at_once():
  """Resuming at step 200,000 of an ImageNet-sized split (epoch 39 of 1,281,167 examples, global batch 256, process 3
  of 4) computes one epoch's permutation and nothing before it: the element equals the formula's, from the epoch's
  seeded permutation."""
  n, big_b, b, p = 1_281_167, 256, 64, 3
  start = 200_000 * b + 5
  (index, position, example), = pipeline.global_order(n, 0, global_batch=big_b, process_index=p, process_count=4,
                                                      start_index=start).take(1).as_numpy_iterator()
  expected_position = start // b * big_b + p * b + start % b
  epoch = expected_position // n
  order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=[0, epoch]).numpy()
  assert (index, position, example) == (start, expected_position, order[expected_position - epoch * n])
  assert epoch == 39


@pytest.mark.parametrize('rows_per_task', [3, 8])  # tasks shorter than (and not dividing) the batch of 8; one batch
def test_corrupt_image_keeps_its_place_masked(folder, rows_per_task):
  """An undecodable file is a zero image with mask 0 in its slot: the batches stay slices of the global order (the
  same labels as without the file's decode failing), and each epoch masks it once."""
  config = make_config(folder)
  config.data.rows_per_task = rows_per_task
  (folder / 'b' / 'broken.jpg').write_bytes(b'this is not an image')
  batches = take(pipeline.train_batches(config, process_index=0, process_count=1), 8)  # 64 > 2 epochs of 31
  mask = np.concatenate([b['mask'] for b in batches])
  index = np.concatenate([b['index'] for b in batches])
  np.testing.assert_array_equal(index, np.arange(64))  # no gaps, no shift
  bad = np.flatnonzero(mask == 0)
  assert len(bad) == 2 and bad[0] < 31 <= bad[1] < 62  # once per epoch
  images = np.concatenate([b['image'] for b in batches])
  assert (images[bad] == 0).all() and all(images[i].std() > 0 for i in range(64) if i not in bad)
  resumed = take(pipeline.train_batches(config, process_index=0, process_count=1, start_step=3), 5)
  np.testing.assert_array_equal(np.concatenate([b['mask'] for b in resumed]), mask[24:])


def test_folder_where_nothing_decodes_is_stopped_by_the_guard(tmp_path):
  """Every file broken: the stream still moves (all rows masked, no spinning) and the guard stops the run at once."""
  for name in 'ab':
    (tmp_path / name).mkdir()
    for i in range(5):
      (tmp_path / name / f'{i}.jpg').write_bytes(b'not a jpeg')
  batch = next(pipeline.train_batches(make_config(tmp_path), process_index=0, process_count=1))
  assert (batch['mask'] == 0).all()
  guard = pipeline.BadImageGuard(0.05, min_examples=10)
  guard.update(batch['mask'])  # 8 seen, fewer than min_examples: no verdict yet
  with pytest.raises(DataError, match='16 of the first 16 .*could not be decoded.*max_bad_fraction'):
    guard.update(batch['mask'])


def test_bad_image_guard_allows_the_configured_fraction_and_stops_clearly_more():
  guard = pipeline.BadImageGuard(0.125, min_examples=8)
  for _ in range(20):  # exactly the allowed fraction: 1 in 8, never stopped by the luck of the draw
    guard.update(np.array([1, 1, 1, 0, 1, 1, 1, 1], np.float32))
  assert (guard.seen, guard.bad) == (160, 20)
  with pytest.raises(DataError):
    for _ in range(3):  # then nothing decodes: stopped within a few batches
      guard.update(np.zeros(8, np.float32))


def test_too_many_bad_has_a_margin_for_chance():
  assert not pipeline.too_many_bad(5, 256, 0.01)  # 2% in a small sample of a 1% dataset: chance
  assert pipeline.too_many_bad(20, 256, 0.01)
  assert pipeline.too_many_bad(16, 16, 0.05) and not pipeline.too_many_bad(0, 16, 0.0)


def test_check_decodable_probes_before_training(folder, tmp_path):
  pipeline.check_decodable(make_config(folder), pipeline.build_source(make_config(folder)))  # all good: passes
  for name in 'ab':
    (tmp_path / 'bad' / name).mkdir(parents=True)
    for i in range(6):
      (tmp_path / 'bad' / name / f'{i}.png').write_bytes(b'not a png')
  config = make_config(tmp_path / 'bad')
  config.data.max_bad_fraction = 0.01
  with pytest.raises(DataError, match='12 of 12 training images probed before training could not be decoded'):
    pipeline.check_decodable(config, pipeline.build_source(config))


@pytest.fixture(scope='module', params=['tfrecord', 'array_record'])
def tiny_tfds(request, tmp_path_factory):
  """The 3-class, 12-image TFDS dataset of test_sources, prepared in each file format."""
  from tests.data.test_sources import InceptionDataTestTiny  # registers the builder  pylint: disable=import-outside-toplevel
  del InceptionDataTestTiny
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  data_dir = str(tmp_path_factory.mktemp(request.param))
  tfds.builder('inception_data_test_tiny', data_dir=data_dir, file_format=request.param).download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return request.param, data_dir


def test_tfds_stream_resumes_exactly_in_either_file_format(tiny_tfds):
  """TFRecord: per-process shards epoch by epoch, a resume re-reads only the current epoch; ArrayRecord: random access,
  the global order. Either way a resumed stream equals the uninterrupted one, across epoch boundaries (12 images,
  batches of 4 per process)."""
  file_format, data_dir = tiny_tfds
  config = make_config('', batch_size=8)
  config.data.update(source='tfds', tfds_name='inception_data_test_tiny', tfds_data_dir=data_dir, shuffle_buffer=4)
  source = pipeline.build_source(config)
  assert source.random_access == (file_format == 'array_record')
  streams = [take(pipeline.train_batches(config, process_index=i, process_count=2, source=source), 7)
             for i in range(2)]
  labels = np.concatenate([np.concatenate([streams[0][k]['label'], streams[1][k]['label']]) for k in range(7)])
  assert collections.Counter(labels[:12].tolist()) == {0: 4, 1: 4, 2: 4}  # every image once in the first epoch
  assert all((b['mask'] == 1).all() for stream in streams for b in stream)
  for i in range(2):
    resumed = take(pipeline.train_batches(config, process_index=i, process_count=2, start_step=4, source=source), 3)
    for a, b in zip(streams[i][4:], resumed):
      for key in a:
        np.testing.assert_array_equal(a[key], b[key])
  if source.random_access:  # the global order: one process reading both halves sees the same batches
    whole = take(pipeline.train_batches(config, process_index=0, process_count=1, source=source), 7)
    np.testing.assert_array_equal(np.concatenate([b['label'] for b in whole]), labels)

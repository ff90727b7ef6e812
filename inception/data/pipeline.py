"""The tf.data input pipelines: an endless, resumable training stream and a padded, finite eval pass.

Both yield numpy dicts of per-process batches (global batch size / process count). TF is kept off any
accelerator so JAX owns them.

Training order. For sources with random access (image folders) the order is global: epoch e is a permutation of the
whole split seeded by (seed, e), the epochs are concatenated into one stream, global batch k is its slice k, and each
process reads only its own part of that slice (process p: rows p*b .. (p+1)*b-1 of each global batch of B = P*b).
An example's augmentation is seeded by its global stream position. So the global batches, their augmentation and the
trained model do not depend on how many processes or devices share the work. Other sources (TFDS) are read as
per-process shards with a shuffle buffer: deterministic for a given number of processes.
"""
import math
from typing import Dict, Iterator

import ml_collections
import numpy as np
import tensorflow as tf

from inception.data.preprocess import PREPROCESS
from inception.data.sources import build_source

try:  # TF must never claim a GPU that JAX needs; fails only if TF already initialised its devices.
  tf.config.set_visible_devices([], 'GPU')
except RuntimeError:
  pass


def stage_pp(pp: ml_collections.ConfigDict, stage: str) -> ml_collections.ConfigDict:
  """The flat preprocessing config for `stage` ('train' / 'eval'): shared keys overlaid by the stage's."""
  flat = {k: v for k, v in pp.items() if k not in ('train', 'eval')}
  flat.update(pp[stage].to_dict())
  return ml_collections.ConfigDict(flat)


def _options() -> tf.data.Options:
  """Deterministic element order; one thread per element so parallelism comes from parallel map()."""
  options = tf.data.Options()
  options.deterministic = True
  options.threading.max_intra_op_parallelism = 1
  return options


def local_batch_size(global_batch_size: int, process_count: int) -> int:
  """The per-process batch size; ValueError unless the global size divides evenly."""
  if global_batch_size % process_count:
    raise ValueError(f'Batch size {global_batch_size} is not divisible by the {process_count} processes.')
  return global_batch_size // process_count


def _preprocess_fn(config: ml_collections.ConfigDict, stage: str, load):
  """`fn(index, record, position=index) -> {'image', 'label', 'index'}`: loads, then runs the stage's transform.

  The transform is seeded with [config.seed, position], so augmentation depends only on stream position.
  """
  pp = stage_pp(config.pp, stage)
  transform = PREPROCESS.get(pp.name)

  def fn(index, record, position=None):
    example = load(record)
    seed = tf.stack([tf.constant(int(config.seed), tf.int64), index if position is None else position])
    image = transform(example['image_bytes'], seed, pp)
    return {'image': image, 'label': example['label'], 'index': index}

  return fn


def global_order(num_examples: int, seed: int, *, global_batch: int, process_index: int, process_count: int,
                 start_position: int = 0) -> tf.data.Dataset:
  """This process's endless part of the global training order, as (index, position, example_id) int64 triples.

  `position` counts over the global stream (epochs of `num_examples` seeded permutations, concatenated); this process
  takes rows [p*b, (p+1)*b) of every global batch of `global_batch` = process_count * b. `index` counts this process's
  own elements (0, 1, 2, ...): resuming at `start_position` (an index) continues the stream exactly, at the cost of
  filtering at most one epoch of integers (no example is read).
  """
  b = local_batch_size(global_batch, process_count)
  n, big_b, p = int(num_examples), int(global_batch), int(process_index)

  def to_position(index):  # local index -> global position
    return index // b * big_b + p * b + index % b

  first = to_position(int(start_position))
  first_epoch = first // n

  def epoch(e):
    order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=tf.stack([int(seed), e]))
    start = tf.where(e == first_epoch, first - e * n, 0)
    positions = tf.data.Dataset.range(e * n + start, (e + 1) * n)
    return tf.data.Dataset.zip(positions, tf.data.Dataset.from_tensor_slices(order[start:]))

  ds = tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch)
  ds = ds.filter(lambda position, _: position % big_b // b == p)
  return ds.map(lambda position, example: (position // big_b * b + position % big_b - p * b, position, example))


def train_batches(config: ml_collections.ConfigDict, *, process_index: int, process_count: int,
                  start_position: int = 0, source=None) -> Iterator[Dict[str, np.ndarray]]:
  """Endless numpy batches {'image': f32 [B, S, S, 3], 'label': i32 [B], 'index': i64 [B]}, B local.

  `index` is the example's position in this process's stream (see the module docstring for the order;
  augmentation is seeded by config.seed and the stream position), so starting at `start_position`
  reproduces the tail of an uninterrupted stream. Undecodable images are dropped (gaps in `index`,
  see SkipCounter). Pass the `source` the caller already built to avoid listing the data again.
  """
  batch = local_batch_size(config.batch_size, process_count)
  source = build_source(config) if source is None else source
  if source.num_examples('train') < process_count:
    raise ValueError(f'The train split has {source.num_examples("train")} examples, fewer than the '
                     f'{process_count} processes.')
  preprocess = _preprocess_fn(config, 'train', source.load)
  if hasattr(source, 'lookup'):  # random access: the global order (module docstring)
    lookup = source.lookup('train')
    ds = global_order(source.num_examples('train'), config.seed, global_batch=config.batch_size,
                      process_index=process_index, process_count=process_count, start_position=start_position)
    ds = ds.map(lambda index, position, example: preprocess(index, lookup(example), position),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  else:  # a per-process shard; skip records before decoding, so resuming reads but does not decode
    ds = source.records('train', process_index=process_index, process_count=process_count,
                        shuffle_seed=config.seed)
    ds = ds.repeat().enumerate().skip(start_position)
    ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.ignore_errors()
  ds = ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  return ds.with_options(_options()).as_numpy_iterator()


class SkipCounter:
  """Follows `index` batches of train_batches: counts images dropped as undecodable, and where to resume.

  Indices increase by one per stream element, so a gap between consecutive indices is a skipped image.
  """

  def __init__(self, start_position: int = 0, skipped: int = 0):
    self.position = int(start_position)  # The next stream position: start_position on resume.
    self.skipped = int(skipped)

  def update(self, index_batch) -> None:
    """Accounts for one batch of (increasing) stream indices."""
    index_batch = np.asarray(index_batch).reshape(-1)
    if index_batch.size == 0:
      return
    last = int(index_batch[-1])
    self.skipped += (last + 1 - self.position) - index_batch.size
    self.position = last + 1


class EvalBatches:
  """One finite pass over this process's eval shard: numpy {'image', 'label', 'mask'} batches.

  `mask` is 1.0 for real examples, 0.0 for padding. Every process yields exactly `num_batches`
  batches of `batch_size` (short shards padded with masked examples) so multi-host loops stay in
  step. Undecodable images are dropped; `num_examples` is the expected eval count over all
  processes, so the caller gets skipped = num_examples - (sum of mask over all processes).
  Iterating again starts a fresh pass.
  """

  def __init__(self, config: ml_collections.ConfigDict, *, process_index: int, process_count: int, source=None):
    self._config = config
    self._process_index = process_index
    self._process_count = process_count
    self.batch_size = local_batch_size(config.eval_batch_size, process_count)
    self._source = build_source(config) if source is None else source
    self.num_examples = self._source.num_examples('eval')
    self.num_batches = math.ceil(self.num_examples / config.eval_batch_size)

  def __len__(self) -> int:
    return self.num_batches

  def dataset(self) -> tf.data.Dataset:
    """The padded, batched eval tf.data.Dataset of this process."""
    size = int(stage_pp(self._config.pp, 'eval').image_size)
    ds = self._source.records('eval', process_index=self._process_index,
                              process_count=self._process_count)
    preprocess = _preprocess_fn(self._config, 'eval', self._source.load)

    def real(index, record):
      out = preprocess(index, record)
      return {'image': out['image'], 'label': out['label'], 'mask': tf.constant(1.0, tf.float32)}

    ds = ds.enumerate().map(real, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors()
    padding = tf.data.Dataset.from_tensors({
        'image': tf.zeros([size, size, 3], tf.float32),
        'label': tf.constant(0, tf.int32),
        'mask': tf.constant(0.0, tf.float32),
    }).repeat()
    ds = ds.concatenate(padding).take(self.num_batches * self.batch_size)
    ds = ds.batch(self.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(_options())

  def __iter__(self) -> Iterator[Dict[str, np.ndarray]]:
    return self.dataset().as_numpy_iterator()


def eval_batches(config: ml_collections.ConfigDict, *, process_index: int, process_count: int,
                 source=None) -> EvalBatches:
  """The eval pass of this process (see EvalBatches: iterable, with num_examples and num_batches)."""
  return EvalBatches(config, process_index=process_index, process_count=process_count, source=source)

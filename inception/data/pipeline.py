"""The tf.data input pipelines: an endless, resumable training stream and a padded, finite eval pass.

Both yield numpy dicts of per-process batches (global batch size / process count). TF is kept off any
accelerator so JAX owns them.

Training order, and what a resume costs:
- Random-access sources (image folders; TFDS datasets prepared as ArrayRecord): the order is global. Epoch e is a
  permutation of the whole split seeded by (seed, e), the epochs are concatenated into one stream, global batch k is
  its slice k, and process p reads rows p*b .. (p+1)*b-1 of it (B = P*b). An example's augmentation is seeded by its
  global stream position. So the batches, their augmentation and the trained model depend on the global batch size,
  not on how many processes or devices share the work: a checkpoint resumes exactly on another number of hosts, and
  a resume at any step starts at once (O(1): nothing before it is generated or read). With `data.class_share`, two
  such orders, one over a chosen class and one over the rest, fill a fixed share of every batch each (class_share.py).
- Sources read in order (TFDS TFRecord files): each process reads its own shard, epoch by epoch, through a shuffle
  buffer seeded by (seed, epoch). Deterministic for a given number of processes; a resume re-reads (not decodes) at
  most the current epoch of its shard, and needs the same number of processes.
An image that cannot be decoded keeps its place in the order as a masked zero image (`mask` 0): it is counted, left
out of the loss, and the batches never shift.
"""
import math
import os
from typing import Dict, Iterator

import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from inception.augment import stage_pp
from inception.data.preprocess import PREPROCESS
from inception.config_checks import ConfigError
from inception.errors import DataError
from inception.data.sources import build_source

try:  # TF must never claim a GPU that JAX needs; fails only if TF already initialised its devices.
  tf.config.set_visible_devices([], 'GPU')
except RuntimeError:
  pass


def _options() -> tf.data.Options:
  """Deterministic element order; one thread per element so parallelism comes from parallel map()."""
  options = tf.data.Options()
  options.deterministic = True
  options.threading.max_intra_op_parallelism = 1
  return options


def host_cores() -> int:
  """The cores this process may run on."""
  return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()


def local_batch_size(global_batch_size: int, process_count: int) -> int:
  """The per-process batch size; ValueError unless the global size divides evenly."""
  if global_batch_size % process_count:
    raise ValueError(f'Batch size {global_batch_size} is not divisible by the {process_count} processes.')
  return global_batch_size // process_count


def _preprocess_fn(config: ml_collections.ConfigDict, stage: str, load):
  """`fn(index, record, position=index) -> {'image', 'label', 'index', 'seed'}`: loads, then runs the stage's
  transform.

  The transform is seeded with [config.seed, position], so augmentation depends only on stream position; so is
  `seed` (uint32 [2]), which seeds the example's on-device distortions (inception/augment.py).
  """
  pp = stage_pp(config.pp, stage)
  transform = PREPROCESS.get(pp.name)

  def fn(index, record, position=None):
    example = load(record)
    seed = tf.stack([tf.constant(int(config.seed), tf.int64), index if position is None else position])
    extra = {}
    if 'boxes' in example:  # a box source (data/box_source.py): its transform moves the boxes with the pixels
      check_moves_boxes(pp, stage)
      image, extra['boxes'] = transform(example['image_bytes'], seed, pp, boxes=example['boxes'])
    else:
      image = transform(example['image_bytes'], seed, pp)
    device_seed = tf.random.stateless_uniform([2], tf.random.experimental.stateless_fold_in(seed, 1), minval=None,
                                              maxval=None, dtype=tf.uint32)
    return {'image': image, 'label': example['label'], 'index': index, 'seed': device_seed, **extra}

  return fn


def check_moves_boxes(pp: ml_collections.ConfigDict, stage: str) -> None:
  """ConfigError unless the stage's transform moves boxes with the pixels (data/box_transforms.py), as a box
  source's examples need."""
  if not getattr(PREPROCESS.get(pp.name), 'moves_boxes', False):
    moving = [name for name in PREPROCESS.names() if getattr(PREPROCESS.get(name), 'moves_boxes', False)]
    raise ConfigError(f'--config.pp.{stage}.name={pp.name!r} does not move boxes with the pixels, which a box source '
                      f'needs: use one of {", ".join(moving)}.')


def _first_local_index(q, *, count: int, per_batch: int, lo: int):
  """The first local index whose stream position is >= q, for a process taking positions [lo, lo + count) of every
  `per_batch` (positions increase with the index)."""
  k, r = q // per_batch, q % per_batch
  return tf.where(r <= lo, k * count, tf.where(r < lo + count, k * count + r - lo, (k + 1) * count))


def slice_order(num_examples: int, seed: int, *, per_batch: int, lo: int, count: int,
                start_index: int = 0) -> tf.data.Dataset:
  """(index, position, example_id) int64 triples: this process's slice [lo, lo + count) of every `per_batch`
  positions of an endless stream (epochs of `num_examples` permutations seeded by (seed, epoch), concatenated).
  `index` counts this process's own elements from 0; starting at `start_index` costs O(1): only the first epoch's
  permutation is computed, nothing before it is generated."""
  n, start = int(num_examples), int(start_index)
  first_epoch = (start // count * per_batch + lo + start % count) // n

  def epoch(e):
    order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=tf.stack([int(seed), e]))
    first = tf.maximum(_first_local_index(e * n, count=count, per_batch=per_batch, lo=lo), start)
    last = _first_local_index((e + 1) * n, count=count, per_batch=per_batch, lo=lo)
    return tf.data.Dataset.range(first, last).map(lambda i: (i, i // count * per_batch + lo + i % count)).map(
        lambda i, position: (i, position, tf.gather(order, position - e * n)))

  return tf.data.Dataset.range(first_epoch, 2**62 // n).flat_map(epoch)


def global_order(num_examples: int, seed: int, *, global_batch: int, process_index: int, process_count: int,
                 start_index: int = 0) -> tf.data.Dataset:
  """This process's endless part of the global training order, as (index, position, example_id) int64 triples.

  `position` counts over the global stream (epochs of `num_examples` seeded permutations, concatenated); this process
  takes rows [p*b, (p+1)*b) of every global batch of `global_batch` = process_count * b. `index` counts this process's
  own elements (0, 1, 2, ...). Starting at `start_index` costs O(1) (slice_order).
  """
  b = local_batch_size(global_batch, process_count)
  return slice_order(num_examples, seed, per_batch=int(global_batch), lo=int(process_index) * b, count=b,
                     start_index=start_index)


def stream_order(source, seed: int, *, process_index: int, process_count: int, start_index: int = 0,
                 shuffle_buffer: int = 10_000) -> tf.data.Dataset:
  """This process's endless stream of (index, record) for a source read in order (TFDS TFRecord files).

  Epoch e of the stream is this process's shard shuffled through a `shuffle_buffer` seeded by (seed, e). Resuming at
  `start_index` re-reads (without decoding) at most the records of the current epoch before it.
  """
  shard = source.records('train', process_index=process_index, process_count=process_count)
  size = source.shard_size('train', process_index=process_index, process_count=process_count)
  first_epoch, offset = divmod(int(start_index), size)
  if offset:
    logging.info('Resuming the training stream at record %d of epoch %d of this process\'s shard: re-reading those '
                 'records (not decoding them).', offset, first_epoch)

  def epoch(e):
    shuffled = shard.shuffle(shuffle_buffer, seed=int(seed) * 1_000_003 + e, reshuffle_each_iteration=False)
    return shuffled.skip(tf.where(e == first_epoch, tf.constant(offset, tf.int64), tf.constant(0, tf.int64)))

  ds = tf.data.Dataset.range(first_epoch, 2**62 // size).flat_map(epoch)
  return ds.enumerate(start=int(start_index))


def _masked_rows(preprocess, rows: int):
  """`fn(*columns) -> Dataset` of one element: the `rows` consecutive stream elements of `columns` (each [rows, ...]),
  preprocessed in order and stacked, an undecodable image replaced by a zero image with `mask` 0 in its row.

  A bad file so keeps its slot in the order (batches stay the global order's slices) instead of spinning or shifting
  the stream, and the step leaves masked rows out of the loss. Errors are caught per task of `rows` images, not per
  image: a tf.data pipeline per image cost half the pipeline's throughput (docs/performance.md). When every image of
  a task fails, the task still yields its (all masked) rows.
  """

  def one(*columns):
    index = columns[0]  # int64 [rows]: the elements' places in this process's stream
    good = tf.data.Dataset.from_tensor_slices(columns).map(lambda *a: {**preprocess(*a), 'mask': tf.constant(1.0)})
    good = good.ignore_errors().batch(rows)
    nothing = {k: tf.zeros([0, *v.shape[1:]], v.dtype) for k, v in good.element_spec.items()}
    decoded = good.concatenate(tf.data.Dataset.from_tensors(nothing)).take(1)  # [n <= rows, ...]

    def fill(out):
      def scatter():  # the n good rows into their slots of a zeroed [rows, ...] batch
        slot = tf.argmax(tf.cast(tf.equal(out['index'][:, None], index[None, :]), tf.int32), axis=1)[:, None]
        return {k: tf.scatter_nd(slot, v, [rows, *v.shape[1:]]) for k, v in out.items()}

      out = tf.cond(tf.equal(tf.shape(out['index'])[0], rows), lambda: out, scatter)
      return {**out, 'index': index}

    return decoded.map(fill)

  return one


def train_batches(config: ml_collections.ConfigDict, *, process_index: int, process_count: int,
                  start_step: int = 0, source=None) -> Iterator[Dict[str, np.ndarray]]:
  """Endless numpy batches {'image': u8 [B, S, S, 3], 'label': i32 [B], 'index': i64 [B], 'seed': u32 [B, 2],
  'mask': f32 [B]}, B local: the host part of the training transform; the train step distorts and scales (augment).

  Batch k (from 0) is training step k + 1's share of this process; starting at `start_step` gives the same batches an
  uninterrupted stream gives from there (see the module docstring for the order; augmentation is seeded by config.seed
  and the stream position). `index` is the example's place in this process's stream; an undecodable image keeps its
  place as a zero image with `mask` 0. Pass the `source` the caller already built to avoid listing the data again.
  """
  batch = local_batch_size(config.batch_size, process_count)
  source = build_source(config) if source is None else source
  if source.num_examples('train') < process_count:
    raise ValueError(f'The train split has {source.num_examples("train")} examples, fewer than the '
                     f'{process_count} processes.')
  preprocess = _preprocess_fn(config, 'train', source.load)
  start_index = int(start_step) * batch
  share = tuple(config.data.get('class_share') or ())
  if share and not hasattr(source, 'files'):
    raise ConfigError(f'--config.data.class_share={share} needs the labels of every training example up front: an '
                      f'image folder (data.source=\'folder\'); set it to () for this source.')
  if source.random_access:  # the global order (module docstring), or with a class's share of every batch
    if share:
      from inception.data import class_share  # pylint: disable=import-outside-toplevel  (it builds on this module)
      label, chosen = class_share.check(share, source.class_names, config.batch_size)
      ds = class_share.class_share_order([y for _, y in source.files('train')], label, chosen, config.seed,
                                         global_batch=config.batch_size, process_index=process_index,
                                         process_count=process_count, start_index=start_index)
    else:
      ds = global_order(source.num_examples('train'), config.seed, global_batch=config.batch_size,
                        process_index=process_index, process_count=process_count, start_index=start_index)
    lookup = source.lookup('train')
    fn = lambda index, position, example: preprocess(index, lookup(example), position)
  else:  # a per-process shard, epoch by epoch
    ds = stream_order(source, config.seed, process_index=process_index, process_count=process_count,
                      start_index=start_index, shuffle_buffer=int(config.data.shuffle_buffer))
    fn = preprocess
  rows = min(int(config.data.rows_per_task), batch)
  ds = ds.batch(rows).interleave(_masked_rows(fn, rows), cycle_length=host_cores() * int(config.data.tasks_per_core),
                                 block_length=1, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  if rows != batch:
    ds = ds.rebatch(batch, drop_remainder=True)
  ds = ds.prefetch(tf.data.AUTOTUNE)
  return ds.with_options(_options()).as_numpy_iterator()


def too_many_bad(bad: int, seen: int, max_fraction: float) -> bool:
  """Whether `bad` of `seen` images is clearly more than `max_fraction`: beyond the fraction by three binomial standard
  deviations plus one, so a dataset right at the limit is not stopped by the luck of its first batches."""
  expected = max_fraction * seen
  return bad > expected + 3.0 * math.sqrt(expected * (1.0 - max_fraction)) + 1.0


class BadImageGuard:
  """Counts this process's masked (undecodable) training images and stops the run when there are too many.

  The check is local (no device round trip): every process sees its own share of the same global order.
  """

  def __init__(self, max_fraction: float, min_examples: int):
    self.max_fraction, self.min_examples = float(max_fraction), int(min_examples)
    self.seen = self.bad = 0

  def update(self, mask: np.ndarray) -> None:
    """Accounts for one batch's `mask`; DataError when clearly more than `max_fraction` of the images were bad."""
    self.seen += mask.size
    self.bad += int(np.sum(mask <= 0))
    if self.seen >= self.min_examples and too_many_bad(self.bad, self.seen, self.max_fraction):
      raise DataError(_too_many_bad_message(self.bad, f'the first {self.seen} training images this process read',
                                            self.max_fraction))


def _too_many_bad_message(bad: int, what: str, max_fraction: float) -> str:
  return (f'{bad} of {what} could not be decoded (more than --config.data.max_bad_fraction={max_fraction:g}). Check '
          f'the data: files that are empty, truncated or not images; formats tf.data cannot read are named in the '
          f'source\'s warning above. To train on the rest anyway, raise --config.data.max_bad_fraction.')


def check_decodable(config: ml_collections.ConfigDict, source, count: int = 64) -> None:
  """Decodes `count` training images spread over the split (no augmentation) before anything is written or compiled;
  DataError when clearly more than `data.max_bad_fraction` of them fail (e.g. a folder where nothing decodes)."""
  pp = stage_pp(config.pp, 'eval')
  transform = PREPROCESS.get(pp.name)
  if source.random_access:
    n = source.num_examples('train')
    ids = np.unique(np.linspace(0, n - 1, min(count, n)).astype(np.int64))
    records = tf.data.Dataset.from_tensor_slices(ids).map(source.lookup('train'))
  else:
    records = source.records('train', process_index=0, process_count=1).take(count)

  def count_of(ds):
    return int(ds.reduce(np.int64(0), lambda k, _: k + 1).numpy())

  total = count_of(records)
  decoded = count_of(records.map(
      lambda record: transform(source.load(record)['image_bytes'], tf.constant([0, 0], tf.int64), pp),
      num_parallel_calls=tf.data.AUTOTUNE).ignore_errors())
  if too_many_bad(total - decoded, total, float(config.data.max_bad_fraction)):
    raise DataError(_too_many_bad_message(total - decoded, f'{total} training images probed before training',
                                          float(config.data.max_bad_fraction)))


class EvalBatches:
  """One finite pass over this process's eval shard: numpy {'image' (uint8), 'label', 'mask'} batches.

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

    def real(index, record):  # image, label and whatever else the source gives (a box source: boxes)
      out = preprocess(index, record)
      return {**{k: v for k, v in out.items() if k not in ('index', 'seed')}, 'mask': tf.constant(1.0, tf.float32)}

    ds = ds.enumerate().map(real, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors()
    padding = tf.data.Dataset.from_tensors({  # zeros of every key: for a classification source, a zero image, label 0
        key: tf.zeros([size, size, 3], tf.uint8) if key == 'image' else tf.zeros(spec.shape, spec.dtype)
        for key, spec in ds.element_spec.items()}).repeat()
    ds = ds.concatenate(padding).take(self.num_batches * self.batch_size)
    ds = ds.batch(self.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(_options())

  def __iter__(self) -> Iterator[Dict[str, np.ndarray]]:
    return self.dataset().as_numpy_iterator()


def eval_batches(config: ml_collections.ConfigDict, *, process_index: int, process_count: int,
                 source=None) -> EvalBatches:
  """The eval pass of this process (see EvalBatches: iterable, with num_examples and num_batches)."""
  return EvalBatches(config, process_index=process_index, process_count=process_count, source=source)

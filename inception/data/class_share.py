"""A training order whose every global batch holds a fixed share of one class (`data.class_share`): R-CNN's fine-tuning
batches of 32 foreground and 96 background regions.

The chosen class's examples and the others' form two streams, each an endless run of seeded permutations as the
global order is (pipeline.slice_order). Global batch k takes `chosen` = round(share x B) examples from the first
stream and B - chosen from the second, spread evenly over its rows (row j is the chosen class's when
floor((j + 1) chosen / B) > floor(j chosen / B)), so every process's rows carry the share too. As the global order,
the batches depend on the global batch size only, and a resume at any step starts at once.
"""
from typing import Sequence, Tuple

import numpy as np
import tensorflow as tf

from inception.config_checks import ConfigError
from inception.data.pipeline import local_batch_size, slice_order


def check(class_share, class_names: Sequence[str], global_batch: int) -> Tuple[int, int]:
  """(label, examples of it per global batch) for `data.class_share` = (class name, share); a ConfigError naming the
  fix when the class is unknown or the share leaves either stream without a row."""
  if len(class_share) != 2:
    raise ConfigError(f'--config.data.class_share={tuple(class_share)}: expected (class name, share of each batch), '
                      f'e.g. ("background", 0.75), or () for the plain order.')
  name, share = str(class_share[0]), float(class_share[1])
  if name not in class_names:
    raise ConfigError(f'--config.data.class_share names {name!r}, which is not a training class '
                      f'({", ".join(class_names[:10])}).')
  chosen = int(round(share * global_batch))
  if not 0 < chosen < global_batch:
    raise ConfigError(f'--config.data.class_share={name!r}, {share}: {chosen} of a batch of {global_batch} leaves '
                      f'{"the class" if chosen <= 0 else "the other classes"} no row; pick a share between '
                      f'{1 / global_batch:.3g} and {1 - 1 / global_batch:.3g}.')
  return list(class_names).index(name), chosen


def rows_of_class(chosen: int, global_batch: int) -> np.ndarray:
  """bool [B]: the rows of a global batch that take the chosen class, spread evenly."""
  j = np.arange(global_batch)
  return (j + 1) * chosen // global_batch > j * chosen // global_batch


def class_share_order(labels: Sequence[int], label: int, chosen: int, seed: int, *, global_batch: int,
                      process_index: int, process_count: int, start_index: int = 0) -> tf.data.Dataset:
  """This process's endless part of the order, as pipeline.global_order's (index, position, example_id) triples:
  `chosen` examples labelled `label` in every global batch of `global_batch`, the rest from the other labels."""
  labels = np.asarray(labels)
  b, big_b, p = local_batch_size(global_batch, process_count), int(global_batch), int(process_index)
  if int(start_index) % b:
    raise ValueError(f'start_index {start_index} is not at a batch boundary (local batch {b}).')
  start_batch = int(start_index) // b
  every = rows_of_class(chosen, big_b)  # over the global batch
  rows = every[p * b:(p + 1) * b]  # this process's rows
  parts = []
  for stream, ids, per_batch, before, count in (
      (1, np.flatnonzero(labels == label), chosen, np.count_nonzero(every[:p * b]), np.count_nonzero(rows)),
      (2, np.flatnonzero(labels != label), big_b - chosen, np.count_nonzero(~every[:p * b]), np.count_nonzero(~rows))):
    if not len(ids):
      raise ConfigError(f'--config.data.class_share: no training example {"is" if stream == 1 else "is not"} of the '
                        f'chosen class (label {label}), so its share of a batch cannot be filled; set it to ().')
    if not count:  # this process's rows take none of this stream
      parts.append(tf.data.Dataset.from_tensors(tf.zeros([0], tf.int64)).repeat())
      continue
    table = tf.constant(ids, tf.int64)
    order = slice_order(len(ids), int(seed) + 1_000_003 * stream, per_batch=per_batch, lo=int(before),
                        count=int(count), start_index=start_batch * int(count))
    parts.append(order.map(lambda i, position, example, t=table: tf.gather(t, example)).batch(int(count)))
  # Row t of a local batch: the next example of the chosen stream where rows[t], else the next of the other.
  take = np.where(rows, np.cumsum(rows) - 1, np.count_nonzero(rows) + np.cumsum(~rows) - 1)
  offsets = np.arange(b, dtype=np.int64)

  def batch(k, chosen_ids, other_ids):
    examples = tf.gather(tf.concat([chosen_ids, other_ids], 0), take)
    return k * b + offsets, k * big_b + p * b + offsets, examples

  ds = tf.data.Dataset.zip(tuple(parts)).enumerate(start=start_batch)
  return ds.map(lambda k, ids: batch(k, *ids)).unbatch()

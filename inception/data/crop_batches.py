"""The multi-crop eval input: one pass over this process's eval shard as fixed-size batches of crops.

Each image becomes its K crops (data/crops.py: 1, 10 or 144); the crops of consecutive images are cut into batches
of the local eval batch size, so a batch holds crops of several images and 144 crops of any number of images run in
bounded memory. Every crop carries its image's index in the whole split (`example`), so the crops' softmax can be
averaged per image wherever they were computed. Every process yields the same number of batches (short shards are
padded with masked rows), as multi-host loops need. An image that cannot be decoded is left out (none of its crops
appear) and counts as skipped.
"""
import math
from typing import Dict, Iterator

import ml_collections
import numpy as np
import tensorflow as tf

from inception.augment import stage_pp
from inception.data import crops as crops_lib
from inception.data.pipeline import local_batch_size
from inception.data.sources import build_source


class MultiCropBatches:
  """numpy {'image': u8 [b, S, S, 3], 'example': i32 [b] (-1: padding), 'label': i32 [b], 'mask': f32 [b]} batches
  of `crops` crops per image; iterating again starts a fresh pass."""

  def __init__(self, config: ml_collections.ConfigDict, crops: int, *, process_index: int, process_count: int,
               source=None, split: str = 'eval'):
    crops_lib.check_crops(crops)
    self.crops, self.split = int(crops), split
    self.pp = stage_pp(config.pp, 'eval')
    self._process_index, self._process_count = process_index, process_count
    self.batch_size = local_batch_size(config.eval_batch_size, process_count)
    self.source = build_source(config) if source is None else source
    self.num_examples = self.source.num_examples(split)
    per_process = math.ceil(self.num_examples / process_count)
    self.num_batches = max(1, math.ceil(per_process * self.crops / self.batch_size))

  def __len__(self) -> int:
    return self.num_batches

  def dataset(self) -> tf.data.Dataset:
    size, k = int(self.pp.image_size), self.crops
    start, stride = self.source.shard_position(self.split, process_index=self._process_index,
                                               process_count=self._process_count)
    records = self.source.records(self.split, process_index=self._process_index, process_count=self._process_count)

    def image_crops(i, record):
      example = self.source.load(record)
      return {'image': crops_lib.multi_crop(example['image_bytes'], k, self.pp),
              'example': tf.fill([k], tf.cast(start + i * stride, tf.int32)),
              'label': tf.fill([k], tf.cast(example['label'], tf.int32)),
              'mask': tf.ones([k], tf.float32)}

    ds = records.enumerate().map(image_crops, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors().unbatch()
    padding = tf.data.Dataset.from_tensors({
        'image': tf.zeros([size, size, 3], tf.uint8), 'example': tf.constant(-1, tf.int32),
        'label': tf.constant(0, tf.int32), 'mask': tf.constant(0.0, tf.float32)}).repeat()
    ds = ds.concatenate(padding).take(self.num_batches * self.batch_size)
    ds = ds.batch(self.batch_size, drop_remainder=True).prefetch(2)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options)

  def __iter__(self) -> Iterator[Dict[str, np.ndarray]]:
    return self.dataset().as_numpy_iterator()

"""A source of whole images with their boxes, for box-regressing tasks (MultiBox): a PASCAL VOC-layout folder.

Each example is one image of a split (inception/detection/voc.py reads it: bad files and boxes are left out and counted
there) with all its boxes in image-normalised coordinates (x0 / width, y0 / height, x1 / width, y1 / height), as
float32 [max_boxes, 4] padded with zero rows; `label` is 0 (the boxes are class-agnostic). The box transforms
(data/box_transforms.py) move the boxes with the pixels. Random access like the folder source, so the training order is
global and a resume starts at once (data/pipeline.py).
"""
from typing import Dict, Optional, Tuple

import ml_collections
import numpy as np
import tensorflow as tf

from inception.data.sources import SOURCES, SPLITS, _check_split
from inception.detection import priors as priors_lib
from inception.detection import voc
from inception.errors import DataError


@SOURCES.register('voc_boxes')
class VocBoxSource:
  """`data.root`'s VOC splits `data.train_split` and `data.eval_split`, boxes of `data.classes` (() = every class in
  the annotations), at most `data.max_boxes` per image; `data.decode_images` decodes every image when listing."""

  random_access = True

  def __init__(self, data_config: ml_collections.ConfigDict):
    self.max_boxes = int(data_config.max_boxes)
    if self.max_boxes < 1:
      raise DataError(f'--config.data.max_boxes={self.max_boxes}: expected an integer >= 1.')
    names = {'train': data_config.train_split, 'eval': data_config.eval_split}
    self.splits: Dict[str, voc.VocSplit] = {
        split: voc.load_split(data_config.root, names[split], tuple(data_config.classes),
                              bool(data_config.decode_images)) for split in SPLITS}
    self.class_names = list(self.splits['train'].class_names)
    self._tensors = {split: self._as_tensors(self.splits[split]) for split in SPLITS}

  def _as_tensors(self, data: voc.VocSplit) -> Dict[str, np.ndarray]:
    """{'path': [N], 'boxes': float32 [N, max_boxes, 4] normalised and zero-padded, 'label': int32 [N] zeros};
    DataError naming the first image with more boxes than max_boxes."""
    boxes = np.zeros([len(data.records), self.max_boxes, 4], np.float32)
    for i, record in enumerate(data.records):
      if len(record.boxes) > self.max_boxes:
        most = max(len(r.boxes) for r in data.records)
        raise DataError(f'{record.image_id} of split {data.split!r} has {len(record.boxes)} boxes, more than '
                        f'--config.data.max_boxes={self.max_boxes}: raise it to {most} (the most in the split).')
      boxes[i, :len(record.boxes)] = priors_lib.normalised_boxes([record])
    return {'path': np.array([r.path for r in data.records]), 'boxes': boxes,
            'label': np.zeros(len(data.records), np.int32)}

  @property
  def num_classes(self) -> int:
    """The number of classes whose boxes are read (the boxes themselves carry no class)."""
    return len(self.class_names)

  def num_examples(self, split: str) -> int:
    """Images in `split` ('train' or 'eval'), over all processes."""
    _check_split(split)
    return len(self.splits[split].records)

  def voc_split(self, split: str) -> voc.VocSplit:
    """The records of `split` as the VOC reader gave them (pixel boxes, classes)."""
    _check_split(split)
    return self.splits[split]

  def training_boxes(self) -> np.ndarray:
    """Every training box in image-normalised coordinates, float64 [N, 4]: what the priors are clustered from."""
    return priors_lib.normalised_boxes(self.splits['train'].records)

  def records(self, split: str, *, process_index: int, process_count: int,
              shuffle_seed: Optional[int] = None) -> tf.data.Dataset:
    """One pass over this process's images (every process_count-th, from process_index) as {'path', 'boxes',
    'label'}; nothing is read. With `shuffle_seed`, shuffled (and reshuffled on each repeat), deterministically."""
    _check_split(split)
    shard = {k: v[process_index::process_count] for k, v in self._tensors[split].items()}
    ds = tf.data.Dataset.from_tensor_slices(shard)
    if shuffle_seed is not None and len(shard['path']):
      ds = ds.shuffle(len(shard['path']), seed=int(shuffle_seed), reshuffle_each_iteration=True)
    return ds

  def shard_position(self, split: str, *, process_index: int, process_count: int) -> Tuple[int, int]:
    """(start, stride): this process's k-th record of `split` is example start + k * stride of the whole split."""
    _check_split(split)
    return process_index, process_count

  def lookup(self, split: str):
    """Random access over the whole split: `fn(example_id int64 []) -> {'path', 'boxes', 'label'}` (nothing read)."""
    _check_split(split)
    tensors = {k: tf.constant(v) for k, v in self._tensors[split].items()}
    return lambda i: {k: tf.gather(v, i) for k, v in tensors.items()}

  @staticmethod
  def load(record: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """Reads a record's image: {'path', 'boxes', 'label'} -> {'image_bytes', 'boxes', 'label'}."""
    return {'image_bytes': tf.io.read_file(record['path']), 'boxes': record['boxes'], 'label': record['label']}

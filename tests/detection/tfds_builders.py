"""Two tiny TFDS detection builders for the TFDS reader's tests, filled from a VOC-layout folder (no download).

`BccdVocLike` has the feature layout of TFDS's `voc` and converts boxes as its builder does (VOC's 1-based xmin, ymin,
xmax, ymax divided by the annotated width and height); `BccdCocoLike` has `coco`'s layout and conversion (continuous
x, y, x + w, y + h divided by the size; VOC's difficult flag stands in for COCO's iscrowd), and an unlabelled test split
as COCO's. Both have BCCD's classes, in an order other than configs/detection.py:bccd's. Set `SOURCE` (a VOC folder
with train, val and test split files) before `download_and_prepare`; reading a prepared copy does not need it.
"""
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from inception.detection import voc

CLASSES = ('Platelets', 'RBC', 'WBC')
_SPLITS = {'train': 'train', 'validation': 'val', 'test': 'test'}  # TFDS split -> the folder's split file


class _FromVocFolder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Examples from the VOC folder `SOURCE`: one per id of each split file, the image file as it is."""
  VERSION = tfds.core.Version('1.0.0')
  SOURCE = ''
  # No checksums file to find: TFDS 4.9.10 looks for one next to the builder's module through `importlib_resources`,
  # which it imports without declaring it on Python >= 3.9 (tensorflow/datasets#11212); requirements.txt lists it.
  code_path = None
  LABELLED_SPLITS = ('train', 'validation', 'test')

  def _objects_feature(self) -> tfds.features.Sequence:
    raise NotImplementedError

  def _object(self, obj: voc.VocObject, width: int, height: int, index: int) -> dict:
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(),
        'image/filename': tfds.features.Text(),
        'objects': self._objects_feature(),
    }))

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {split: self._generate_examples(split) for split in _SPLITS}

  def _generate_examples(self, split):
    root = pathlib.Path(self.SOURCE)
    for image_id in voc.split_ids(root, _SPLITS[split]):
      annotation = voc.parse_annotation(root / 'Annotations' / f'{image_id}.xml')
      objects = [self._object(obj, annotation.width, annotation.height, i) for i, obj in enumerate(annotation.objects)]
      yield image_id, {'image': str(root / 'JPEGImages' / annotation.filename), 'image/filename': annotation.filename,
                       'objects': objects if split in self.LABELLED_SPLITS else []}


class BccdVocLike(_FromVocFolder):
  """TFDS `voc`'s layout: objects/bbox (1-based corners / size), label, is_difficult, is_truncated."""

  def _objects_feature(self):
    return tfds.features.Sequence({'label': tfds.features.ClassLabel(names=CLASSES),
                                   'bbox': tfds.features.BBoxFeature(), 'is_truncated': np.bool_,
                                   'is_difficult': np.bool_})

  def _object(self, obj, width, height, index):
    return {'label': obj.name, 'bbox': tfds.features.BBox(obj.ymin / height, obj.xmin / width, obj.ymax / height,
                                                          obj.xmax / width),
            'is_truncated': False, 'is_difficult': obj.difficult}


class BccdCocoLike(_FromVocFolder):
  """TFDS `coco`'s layout: objects/id, area, bbox (continuous corners / size), label, is_crowd; test unlabelled. As
  coco's builder, its ClassLabel is declared by count and named while generating (a reader gets the names that TFDS
  stored with the prepared data)."""
  LABELLED_SPLITS = ('train', 'validation')

  def _objects_feature(self):
    return tfds.features.Sequence({'id': np.int64, 'area': np.int64, 'bbox': tfds.features.BBoxFeature(),
                                   'label': tfds.features.ClassLabel(num_classes=len(CLASSES)), 'is_crowd': np.bool_})

  def _split_generators(self, dl_manager):
    self.info.features['objects']['label'].names = list(CLASSES)
    return super()._split_generators(dl_manager)

  def _object(self, obj, width, height, index):
    # COCO's continuous corners of the same pixels, in the image; a box written with xmin == xmax (voc.py's degenerate
    # box) stays of zero width, so both layouts carry the same bad box.
    x0 = obj.xmax if obj.xmin == obj.xmax else max(obj.xmin - 1, 0)
    y0 = obj.ymax if obj.ymin == obj.ymax else max(obj.ymin - 1, 0)
    return {'id': index, 'area': int((obj.xmax - x0) * (obj.ymax - y0)), 'label': obj.name,
            'bbox': tfds.features.BBox(y0 / height, x0 / width, obj.ymax / height, obj.xmax / width),
            'is_crowd': obj.difficult}

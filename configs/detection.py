"""The paper's detection entry (section 8): an R-CNN-like system with an Inception region classifier (issue 33).

So far this config holds the keys of the parts that exist: the annotated data (inception/detection/voc.py), the
test-time NMS (nms.py), the regions' context (warp.py) and the evaluation (mean_ap.py). The paper leaves these
unsaid; the defaults are R-CNN's (Girshick et al. 2014): greedy per-class NMS at IoU 0.3, regions warped with 16 px of
context at the network's input size, and mAP as PASCAL VOC's all-point AP at IoU 0.5 (the paper's own ILSVRC figures
use ILSVRC's size-dependent threshold: --config.evaluation.matching=ilsvrc).

No argument: a PASCAL VOC-layout folder of your own (Annotations/, JPEGImages/, ImageSets/Main/), e.g. VOC 2007:

  --config=configs/detection.py --config.data.root=/path/to/VOCdevkit/VOC2007

`:bccd`: the embedded BCCD blood-cell data (data/bccd: 364 images, 3 classes, VOC splits train 205 / val 87 /
test 72).
"""
import ml_collections


def voc() -> ml_collections.ConfigDict:
  """A VOC-layout folder, R-CNN's test-time settings and VOC's metric."""
  c = ml_collections.ConfigDict()

  c.data = ml_collections.ConfigDict(dict(
      format='voc',
      root='',                # the folder holding Annotations/, JPEGImages/ and ImageSets/Main/<split>.txt
      classes=(),             # class names in label order; a box of another class is left out and counted.
                              # () = every name in the folder's annotations, sorted
      train_split='train',
      val_split='val',
      test_split='test',
      decode_images=True,     # decode every image when loading (names truncated files up front); False: headers only
  ))

  # Test time: greedy non-maximum suppression within each class (R-CNN: drop boxes overlapping a better one by > 0.3).
  c.detect = ml_collections.ConfigDict(dict(nms_iou_threshold=0.3))

  # Regions warped to the network's input with this many pixels of context around the box at the input size (R-CNN).
  c.regions = ml_collections.ConfigDict(dict(context_padding=16))

  # mAP: all-point interpolated AP per class at this IoU; matching 'voc' (PASCAL VOC, difficult boxes ignored) or
  # 'ilsvrc' (the threshold is min(iou_threshold, wh / ((w + 10)(h + 10))) per ground-truth box).
  c.evaluation = ml_collections.ConfigDict(dict(iou_threshold=0.5, matching='voc'))
  return c


def bccd() -> ml_collections.ConfigDict:
  """The embedded BCCD data: RBC, WBC and Platelets, in the order of the dataset's description."""
  c = voc()
  c.data.root = 'data/bccd'
  c.data.classes = ('RBC', 'WBC', 'Platelets')
  return c


VARIANTS = {'': voc, 'voc': voc, 'bccd': bccd}


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the recipe named by `arg` (see the module docstring)."""
  if arg not in VARIANTS:
    raise ValueError(f'Unknown detection config variant {arg!r}; known: {", ".join(repr(k) for k in VARIANTS)}.')
  return VARIANTS[arg]()

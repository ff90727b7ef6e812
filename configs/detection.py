"""The paper's detection entry (section 8): an R-CNN-like system with an Inception region classifier (issue 33).

So far this config holds the keys of the parts that exist: the annotated data (inception/detection/voc.py), the
region proposals (selective_search.py, proposal_cache.py, coverage.py), the test-time NMS (nms.py), the regions'
context (warp.py) and the evaluation (mean_ap.py). The paper leaves these unsaid; the defaults are R-CNN's (Girshick
et al. 2014): Selective Search's "fast" mode (HSV and Lab, sigma 0.8, boxes under 20 px dropped) with k in {100, 200}
for the paper's doubled superpixels instead of R-CNN's {50, 100}, greedy per-class NMS at IoU 0.3, regions warped
with 16 px of context at the network's input size, and mAP as PASCAL VOC's all-point AP at IoU 0.5 (the paper's own
ILSVRC figures use ILSVRC's size-dependent threshold: --config.evaluation.matching=ilsvrc).

No argument: a PASCAL VOC-layout folder of your own (Annotations/, JPEGImages/, ImageSets/Main/), e.g. VOC 2007:

  --config=configs/detection.py --config.data.root=/path/to/VOCdevkit/VOC2007

`:bccd`: the embedded BCCD blood-cell data (data/bccd: 364 images, 3 classes, VOC splits train 205 / val 87 /
test 72).

Proposals of a split, cached in the workdir, with their box recall and count per image:

  python -m inception.detection.proposals --config=configs/detection.py:bccd --split=test --workdir=runs/bccd_det
  ... --config.proposals.ks='(50, 100)'     # R-CNN's own fast mode (1x superpixels)
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

  # Region proposals: Selective Search (inception/detection/selective_search.py) with R-CNN's "fast" mode settings,
  # the superpixels doubled as the paper's entry (section 8: "superpixel size 2x", half the proposals). Computed once
  # per image and cached under cache_dir, keyed by the image and these settings.
  c.proposals = ml_collections.ConfigDict(dict(
      color_spaces=('hsv', 'lab'),    # R-CNN fast mode: HSV and Lab
      ks=(100, 200),                  # Felzenszwalb's k per segmentation; R-CNN fast mode (50, 100), doubled here
      min_segment_size_factor=1.0,    # a segmentation's smallest segment, in units of its k (R-CNN: minSize = k)
      sigma=0.8,                      # Felzenszwalb's Gaussian smoothing (R-CNN)
      strategies=('CTSF', 'TSF'),     # merging similarities: C colour, T texture, S size, F fill (R-CNN fast mode)
      min_box_size=20,                # boxes narrower or lower than this many pixels are dropped (R-CNN)
      cache_dir='',                   # '' = <workdir>/proposals; local or gs://
      workers=0,                      # processes computing them; 0 = every core of the host
      recall_iou=0.5,                 # a ground-truth box is covered by a proposal at IoU >= this (the paper's 0.5)
      merge_iou=1.0,                  # merging sets: a box overlapping an earlier one by IoU > this is dropped;
                                      # 1.0 = exact duplicates only (the paper does not say)
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

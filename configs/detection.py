"""The paper's detection entry (section 8): an R-CNN-like system with an Inception region classifier (issue 33).

One config for every stage (inception/detection/): the annotated images (`detection_data`), the region proposals
(`proposals`), the regions the classifier is fine-tuned on (`regions`), the classifier itself (the classification keys
of configs/googlenet.py: model, pp, optimizer, ... with `data` pointing at the regions), test-time NMS (`detect`) and
mAP (`evaluation`). The paper leaves the detection settings unsaid; the defaults are R-CNN's (Girshick et al. 2014):
Selective Search's "fast" mode (HSV and Lab, sigma 0.8, boxes under 20 px dropped) with k in {100, 200} for the
paper's doubled superpixels instead of R-CNN's {50, 100}; regions warped with 16 px of context at 227 px (the same
share at other input sizes); fine-tuning positives at IoU >= 0.5 with their class, everything else background, a
quarter of every batch foreground (R-CNN's 32 + 96); greedy per-class NMS at IoU 0.3; no box regression (the paper:
"due to lack of time"); mAP as PASCAL VOC's all-point AP at IoU 0.5 (the paper's own ILSVRC figures use ILSVRC's
size-dependent threshold: --config.evaluation.matching=ilsvrc).

No argument: a PASCAL VOC-layout folder of your own (Annotations/, JPEGImages/, ImageSets/Main/), e.g. VOC 2007:

  --config=configs/detection.py --config.detection_data.root=/path/to/VOCdevkit/VOC2007

A TFDS dataset instead (inception/detection/tfds_reader.py): prepare it once (`tfds build` downloads; `--data_dir=DIR`
to put it elsewhere, then --config.detection_data.tfds_data_dir=DIR), then name it; its images are exported once per
split to <data dir>/detection_images (or --config.detection_data.tfds_export_dir) for every stage to read:

  tfds build voc/2007
  --config=configs/detection.py --config.detection_data.format=tfds --config.detection_data.tfds_name=voc/2007 \
      --config.detection_data.classes='("cat", "dog", "person")'

(classes: a selection, here 3 of VOC's 20; left out, all 20 in the dataset's order; `predict` needs them named).

COCO: `tfds build coco/2017` and --config.detection_data.tfds_name=coco/2017 --config.detection_data.test_split=val
(COCO's test split is unlabelled); its crowd boxes count as difficult (neither required nor penalised by mAP).

`:bccd`: the embedded BCCD blood-cell data (data/bccd: 364 images, 3 classes, VOC splits train 205 / val 87 /
test 72), the BN GoogLeNet at 64 px; every stage runs in minutes on 2 cores, and `proposals` reads the Selective
Search boxes BCCD ships (data/bccd/proposals) instead of computing them:

  python -m inception.detect proposals --config=configs/detection.py:bccd
  python -m inception.detect regions --config=configs/detection.py:bccd
  python -m inception.main --config=configs/detection.py:bccd
  python -m inception.detect evaluate --config=configs/detection.py:bccd
  python -m inception.detect predict --config=configs/detection.py:bccd --out=runs/bccd_det/pictures \
      data/bccd/JPEGImages/BloodImage_00031.jpg

An ensemble averages the region scores of several runs (e.g. `regions` and `main` again with --config.seed=1 and
another --config.workdir; elsewhere than :bccd add --config.proposals.cache_dir=<the first run>/proposals to share
the proposals) before NMS:
  python -m inception.detect evaluate --config=... --workdirs=runs/bccd_det,runs/bccd_det_1
On every process of a multi-process job, `evaluate --distributed` scores each process's share of the images.
Fine-tuning from a classification run instead of from scratch: --config.init_from=runs/googlenet_mini (`make train`;
on BCCD it measured no better than from scratch: README, "Detection").
With MultiBox's proposals (the paper's Selective Search + MultiBox row): train configs/multibox.py:bccd, then add
--config.proposals.multibox_workdir=runs/bccd_multibox to `proposals` and `evaluate`.
Selective Search's own fast mode (1x superpixels): --config.proposals.ks='(50, 100)'.
"""
import os
import runpy

import ml_collections

_GOOGLENET = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'googlenet.py'))


def voc() -> ml_collections.ConfigDict:
  """A VOC-layout folder: the BN GoogLeNet fine-tuned at 224 px on its regions, R-CNN's settings, VOC's metric."""
  c = _GOOGLENET['mini']()
  c.workdir = 'runs/detection'

  # The annotated images (inception/detection/datasets.py: voc.py or tfds_reader.py).
  c.detection_data = ml_collections.ConfigDict(dict(
      format='voc',           # 'voc': a VOC-layout folder (root); 'tfds': a prepared TFDS dataset (tfds_name)
      root='',                # the folder holding Annotations/, JPEGImages/ and ImageSets/Main/<split>.txt
      tfds_name='',           # format 'tfds': the dataset, e.g. 'voc/2007' or 'coco/2017' (prepared by `tfds build`)
      tfds_data_dir='',       # where it is prepared; '' = TFDS default (~/tensorflow_datasets); local or gs://
      tfds_export_dir='',     # its images are exported once per split to files here for every stage to read;
                              # '' = <TFDS data dir>/detection_images (shared by every run of the dataset)
      classes=(),             # class names in label order; a box of another class is left out and counted.
                              # () = every name in the folder's annotations, sorted (tfds: the dataset's order)
      train_split='train',    # the classifier is fine-tuned on regions of this split ...
      val_split='val',        # ... and its loop evaluates region classification on this one's (tfds: 'val' reads
                              # 'validation', 'trainval' 'train+validation'; TFDS split expressions work too)
      test_split='test',      # `inception.detect evaluate` measures mAP here
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
      read_only_cache_dir='',         # boxes computed before, read where found, never written ('' = none)
      workers=0,                      # processes computing them; 0 = every core of the host
      recall_iou=0.5,                 # a ground-truth box is covered by a proposal at IoU >= this (the paper's 0.5)
      merge_iou=1.0,                  # merging sets: a box overlapping an earlier one by IoU > this is dropped;
                                      # 1.0 = exact duplicates only (the paper does not say)
      multibox_workdir='',            # a trained MultiBox run (configs/multibox.py): its top boxes join Selective
                                      # Search's at test time (the paper: + 200 MultiBox boxes); '' = none
      multibox_top_k=200,             # MultiBox boxes per image, best first (the paper: 200)
  ))

  # The regions the classifier is fine-tuned on (inception/detection/regions.py), written once as an image folder
  # (<workdir>/regions/train|val/<class>/) that the training loop reads like any other: R-CNN's sampling.
  c.regions = ml_collections.ConfigDict(dict(
      context_padding=16,             # pixels of image context around the box at the 227 px input (R-CNN); scaled
                                      # to pp.image_size (16 x size / 227)
      foreground_iou=0.5,             # a proposal overlapping a ground-truth box by IoU >= this takes its class
      background_iou=0.5,             # one whose best IoU is below this is background (R-CNN: everything else)
      foreground_share=0.25,          # R-CNN's 32 of 128: background regions = 3 x foreground per image
      foreground_per_image=64,        # at most this many foreground regions per image (ground-truth boxes first,
                                      # then proposals at random); 0 = all
      background_name='background',   # the extra class; the detector reads the classifier's classes by name
      fill='mean',                    # where the context leaves the image: 'mean' (the image's mean colour, R-CNN's
                                      # mean-subtracted zero) or 'edge' (the border pixels repeated)
      seed=0,                         # which proposals are sampled
      jpeg_quality=95,                # the region files' JPEG quality (OpenCV's 0-100)
  ))

  # The region classifier: data are the regions above, already warped to pp.image_size; training flips them and
  # takes no random crop or colour distortion (the warp is the crop; R-CNN fine-tunes on the warped regions as they
  # are).
  c.data.source = 'folder'
  c.data.root = '{workdir}/regions'
  # R-CNN's batches: 96 of every 128 background (the folder holds that share too: regions.foreground_share).
  c.data.class_share = ('background', 0.75)
  c.pp.image_size = 224
  c.pp.train = dict(name='inception_crop', area_range=(1.0, 1.0), aspect_range=(1.0, 1.0), crop_sampler='uniform_area',
                    max_attempts=1, flip=True, interpolations=('bilinear',), brightness=0.0, contrast=(), saturation=(),
                    hue=0.0)
  c.pp.eval = dict(name='central_crop', crop_ratio=1.0)
  c.num_epochs = 10.0
  c.eval_every_epochs = 5
  c.ema.decay = 0.999

  # Test time: every proposal scored by the classifier (or by several: `--workdirs`, averaged), greedy
  # non-maximum suppression within each class (R-CNN: drop boxes overlapping a better one by > 0.3).
  c.detect = ml_collections.ConfigDict(dict(
      nms_iou_threshold=0.3,
      batch_size=256,                 # regions per scoring batch, over all devices
      max_detections=0,               # per image after NMS, best first; 0 = all
      min_score=0.0,                  # predictions (pictures, --json) show boxes scoring at least this
  ))

  # mAP: all-point interpolated AP per class at this IoU; matching 'voc' (PASCAL VOC, difficult boxes ignored) or
  # 'ilsvrc' (the threshold is min(iou_threshold, wh / ((w + 10)(h + 10))) per ground-truth box).
  c.evaluation = ml_collections.ConfigDict(dict(iou_threshold=0.5, matching='voc'))
  return c


def bccd() -> ml_collections.ConfigDict:
  """The embedded BCCD data (RBC, WBC and Platelets, in the order of the dataset's description) at 64 px."""
  c = voc()
  c.workdir = 'runs/bccd_det'
  c.detection_data.root = 'data/bccd'
  c.detection_data.classes = ('RBC', 'WBC', 'Platelets')
  # BCCD ships its Selective Search boxes at this config's settings (the paper's 2x), as R-CNN shipped VOC's: 3.5 min
  # of 2 cores saved; another setting or OpenCV version computes its own into the workdir.
  c.proposals.read_only_cache_dir = 'data/bccd/proposals'
  c.pp.image_size = 64
  c.regions.foreground_per_image = 32
  c.batch_size = 64
  c.num_epochs = 3.0
  c.eval_every_epochs = 3
  c.log_every_steps = 50
  c.checkpoint_every_steps = 200
  c.detect.min_score = 0.5
  return c


VARIANTS = {'': voc, 'voc': voc, 'bccd': bccd}


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the recipe named by `arg` (see the module docstring)."""
  if arg not in VARIANTS:
    raise ValueError(f'Unknown detection config variant {arg!r}; known: {", ".join(repr(k) for k in VARIANTS)}.')
  return VARIANTS[arg]()

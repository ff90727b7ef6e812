"""MultiBox proposals (Erhan et al. 2014) on an Inception backbone, trained by the project's training loop: the second
source of the paper's detection proposals (section 8: Selective Search's plus MultiBox's top 200; issue 33).

The model is `multibox` (inception/models/multibox.py): a backbone's stages and a head predicting `model.num_priors`
boxes, as offsets from priors (k-means over the training boxes, inception/detection/priors.py), and their confidences.
Each ground-truth box is matched to one prediction through the priors (greedy bipartite matching,
inception/detection/matching.py); the loss is L2 on the matched offsets plus a logistic loss on every confidence
(inception/detection/multibox_loss.py). The data are whole images with their boxes (`data.source='voc_boxes'`, a VOC
folder), resized to the input square; the loop's evaluation reports box recall of the top `multibox.top_k`
predictions on the eval split. The run's priors are kept in its workdir (priors.json);
`inception.detection.multibox_proposals.top_boxes(workdir, records)` gives each image's best boxes in its pixels.

No argument: a VOC-layout folder of your own, GoogLeNet-BN at 224 px:

  python -m inception.main --config=configs/multibox.py --config.data.root=/path/to/VOCdevkit/VOC2007

`:bccd`: the embedded BCCD blood-cell data (data/bccd: train 205 / val 87 images, 3 classes of cells, class-agnostic
here), the small Inception network (inception_tiny) at 128 px; a few minutes on 2 CPU cores:

  python -m inception.main --config=configs/multibox.py:bccd

Its box recall on the test split, alone and merged with Selective Search's proposals (configs/detection.py:bccd's):

  python -m inception.detect proposals --config=configs/detection.py:bccd --split=test \
      --config.proposals.multibox_workdir=runs/bccd_multibox
"""
import os
import runpy

import ml_collections

_GOOGLENET = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'googlenet.py'))


def voc() -> ml_collections.ConfigDict:
  """A VOC-layout folder: MultiBox on GoogLeNet-BN at 224 px, 200 priors, the `mini` recipe's optimiser."""
  c = _GOOGLENET['mini']()
  c.workdir = 'runs/multibox'
  c.task = 'multibox'                     # inception/tasks.py: the loss the loop's steps minimise
  c.evaluators = ('multibox',)            # loss and box recall of the eval split (inception/evaluators/multibox.py)
  del c.loss, c.eval_crops                # the classification loss's and evaluation's keys

  c.model = ml_collections.ConfigDict(dict(
      name='multibox',
      backbone='googlenet_bn',            # any registered Inception model; its classifier is replaced by the head
      num_priors=200,                     # K: priors, predictions per image (the paper's entry used the top 200)
      head_channels=128,                  # the head: 1x1 conv to this many channels,
      head_grid=4,                        # the map resampled to grid x grid (keeps where things are),
      head_hidden=1024,                   # a hidden fully connected layer,
      dropout_rate=0.2,                   # dropout before the output layer
      dtype='float32',
      bn_momentum=0.9,
      bn_epsilon=1e-3,
  ))

  # Whole images with their boxes (inception/data/box_source.py): VOC splits, boxes of `classes` (() = all).
  c.data = ml_collections.ConfigDict(dict(
      source='voc_boxes',
      root='',                            # the folder holding Annotations/, JPEGImages/ and ImageSets/Main/
      classes=(),                         # boxes of these classes are proposals' targets; () = every class
      train_split='train',
      eval_split='val',
      decode_images=True,                 # decode every image when listing (names truncated files up front)
      max_boxes=64,                       # boxes per image the batches hold; an image with more is a DataError
      max_bad_fraction=0.01,
      rows_per_task=32,
      tasks_per_core=2,
  ))

  # The whole image resized to the square (boxes keep their normalised coordinates), mirrored at random in training
  # (inception/data/box_transforms.py), then the recipe's colour distortions on the device.
  c.pp.image_size = 224
  train = c.pp.train.to_dict()
  c.pp.train = dict(name='resize_boxes', flip=True, flip_vertical=False,
                    **{k: train[k] for k in ('brightness', 'contrast', 'saturation', 'hue')})
  c.pp.eval = dict(name='resize_boxes')

  c.multibox = ml_collections.ConfigDict(dict(
      prior_seed=0,                       # k-means++ seeding of the priors
      kmeans_iterations=100,              # Lloyd iterations at most (it stops when no box changes cluster)
      kmeans_max_boxes=100_000,           # cluster a seeded sample of at most this many training boxes; 0 = all
      offset_scale=0.1,                   # a prediction is prior + offset_scale * offset (normalised coordinates)
      loc_weight=1.0,                     # loss = confidence + loc_weight * location (multibox_loss.py)
      top_k=200,                          # predictions per image the evaluation and top_boxes keep, best first
      recall_iou=0.5,                     # a ground-truth box is covered by a prediction at IoU >= this
  ))

  c.batch_size = 32
  c.eval_batch_size = 32
  c.num_epochs = 100
  c.schedule.decay_rate = 0.95
  c.schedule.decay_epochs = 2
  c.schedule.warmup_epochs = 2
  c.eval_every_epochs = 25
  c.log_every_steps = 20
  c.checkpoint_every_steps = 200
  return c


def bccd() -> ml_collections.ConfigDict:
  """The embedded BCCD data (its three classes of cells, class-agnostic) on the small Inception network at 128 px."""
  c = voc()
  c.workdir = 'runs/bccd_multibox'
  c.data.root = 'data/bccd'
  c.data.classes = ('RBC', 'WBC', 'Platelets')
  c.model.backbone = 'inception_tiny'
  c.model.head_grid = 8                   # inception_tiny's map is 16 x 16 at 128 px
  c.model.head_channels = 32
  c.model.head_hidden = 512
  c.pp.image_size = 128
  c.pp.train.flip_vertical = True         # cells have no up or down
  c.num_epochs = 60
  c.eval_every_epochs = 20
  return c


VARIANTS = {'': voc, 'voc': voc, 'bccd': bccd}


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the recipe named by `arg` (see the module docstring)."""
  if arg not in VARIANTS:
    raise ValueError(f'Unknown multibox config variant {arg!r}; known: {", ".join(repr(k) for k in VARIANTS)}.')
  return VARIANTS[arg]()

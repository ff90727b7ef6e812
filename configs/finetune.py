"""Fine-tuning pretrained weights (imported with `python -m inception.convert`, or a run trained here) on an image
folder: a new classifier, the backbone at a tenth of the classifier's learning rate, EMA.

`:NAME` (a model with a recipe in configs/NAME.py): its recipe's model and input, fine-tuned on a folder of class
subfolders (80/20 split by file-name hash, or train/ and val/), e.g. Keras' InceptionV3 weights:

  python -m inception.convert --format=keras_h5 --model=inception_v3 FILE.h5 --out=runs/keras_inception_v3
  python -m inception.main --config=configs/finetune.py:inception_v3 --config.init_from=runs/keras_inception_v3 \
      --config.data.root=PATH/TO/IMAGES

The model keys and input convention must be the weights' (the loop refuses a mismatch and names the override, e.g.
`--config.model.bn_scale=True` for timm's weights); `--config.freeze_backbone=True` trains only the heads.

`:mini_pretrain` and `:mini`: the mechanics shown on the data here, as no ImageNet weights can be downloaded. The BN
GoogLeNet is pretrained on the 91 Caltech 101 classes the embedded subset does not have (../shared/data/caltech101),
then fine-tuned on the embedded 10 classes (EMA top-1 0.776 after 6 epochs, against 0.686 from scratch: one run each,
docs/pretrained.md); `--config.init_from=` (empty) trains the same recipe from scratch:

  python -m inception.main --config=configs/finetune.py:mini_pretrain
  python -m inception.main --config=configs/finetune.py:mini
  python -m inception.main --config=configs/finetune.py:mini --config.init_from= \
      --config.workdir=runs/finetune_mini_scratch
"""
import importlib
import os

import ml_collections

from configs import googlenet

EMBEDDED_CLASSES = ('Faces_easy', 'Leopards', 'Motorbikes', 'airplanes', 'bonsai', 'car_side', 'chandelier',
                    'hawksbill', 'ketch', 'watch')  # data/caltech101-mini


def fine_tuning(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Fine-tuning settings over a recipe `c`: SGD momentum 0.9 at 0.01 (batch 64) for the new heads and 0.001 for the
  backbone, 10 epochs with a 1-epoch warm-up and x0.8 a epoch, label smoothing 0.1, EMA 0.999, milder crops."""
  c.data.source = 'folder'
  c.batch_size, c.eval_batch_size = 64, 100
  c.num_epochs = 10
  c.optimizer = ml_collections.ConfigDict(dict(name='sgd', lr=0.01, lr_batch_size=64, momentum=0.9, nesterov=False,
                                               weight_decay=4e-5, clip_norm=0.0))
  c.backbone_lr_scale = 0.1
  c.freeze_backbone = False
  c.schedule.update(name='staircase', decay_rate=0.8, decay_epochs=1, warmup_epochs=1)
  c.loss.label_smoothing = 0.1
  c.ema.update(decay=0.999, warmup=True)
  c.pp.train.area_range = (0.25, 1.0)
  c.eval_every_epochs, c.log_every_steps, c.checkpoint_every_steps = 2, 25, 500
  return c


def for_model(name: str) -> ml_collections.ConfigDict:
  c = fine_tuning(importlib.import_module(f'configs.{name}').get_config(''))
  c.data.root = ''  # required: --config.data.root=PATH/TO/IMAGES
  c.init_from = ''  # required: --config.init_from=WORKDIR (a converted or trained run)
  c.workdir = f'runs/finetune_{name}'
  return c


def mini_pretrain() -> ml_collections.ConfigDict:
  """The `make train` model (BN GoogLeNet) at 96 px on Caltech 101 less the embedded classes: 91 classes, ~5.6k
  images."""
  c = googlenet.mini()
  c.workdir = 'runs/caltech91_googlenet_bn'
  c.data.root = '../shared/data/caltech101'
  c.data.exclude_classes = EMBEDDED_CLASSES
  c.pp.image_size = 96
  c.batch_size = 64
  c.optimizer.lr = 0.05           # at batch 32: 0.1 at batch 64
  c.num_epochs = 6
  c.schedule.update(decay_rate=0.8, decay_epochs=1, warmup_epochs=1)
  c.ema.decay = 0.99
  c.eval_every_epochs, c.log_every_steps, c.checkpoint_every_steps = 3, 25, 200
  return c


def mini() -> ml_collections.ConfigDict:
  """The pretrained run fine-tuned on the embedded 10 classes at the `make train` size (112 px), 6 epochs, the
  backbone at the heads' rate."""
  c = fine_tuning(googlenet.mini())
  c.workdir = 'runs/finetune_mini'
  c.init_from = 'runs/caltech91_googlenet_bn'
  c.batch_size = 32
  c.optimizer.lr_batch_size = 32
  c.optimizer.lr = 0.02
  # Features from 4.5k images of other classes are far from ImageNet's: here the backbone learns at the full rate
  # (measured, docs/pretrained.md: EMA top-1 0.776 at 1.0, 0.662 at 0.1, 0.686 from scratch).
  c.backbone_lr_scale = 1.0
  c.num_epochs = 6
  c.eval_every_epochs = 3
  return c


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """'mini_pretrain', 'mini', or a model name with a recipe in configs/ (module docstring)."""
  if arg == 'mini_pretrain':
    return mini_pretrain()
  if arg == 'mini':
    return mini()
  if arg and os.path.exists(os.path.join(os.path.dirname(os.path.abspath(__file__)), f'{arg}.py')) \
      and arg != 'finetune':
    return for_model(arg)
  raise ValueError(f'Unknown finetune config variant {arg!r}; use a model with a recipe in configs/ (e.g. '
                   f'\'inception_v3\'), \'mini_pretrain\' or \'mini\'.')

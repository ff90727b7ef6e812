"""Inception-v3 ("Rethinking the Inception Architecture", Szegedy et al. 2015) with its published recipe.

No argument: ImageNet (TFDS `imagenet2012`, manual download, see README), 299 px:

  python -m inception.main --config=configs/inception_v3.py

The recipe, from the paper's section 8 and the released TF-slim training setup: RMSProp (decay 0.9, momentum 0.9,
epsilon 1.0), learning rate 0.045 decayed by 0.94 every 2 epochs (0.045 at batch 256, scaled linearly with the batch,
as TensorFlow's TPU reference runs it), gradients clipped to global norm 2.0, label smoothing 0.1, parameter EMA
0.9999, weight decay 4e-5, dropout 0.2 before the classifier (TF-slim's keep 0.8), BatchNorm decay 0.9997. The aux
head is off by default (`--config.model.aux_heads=True` adds it, weighted 0.4 as TF-slim).

`:mini`: the embedded 10-class Caltech 101 subset (data/caltech101-mini) at 96 px, a few minutes on 2 CPU cores:

  python -m inception.main --config=configs/inception_v3.py:mini
"""
import ml_collections

from configs import googlenet


def rmsprop_recipe(c: ml_collections.ConfigDict, model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The v3 / v4 / Inception-ResNet recipe on top of the GoogLeNet ImageNet config `c` (data, checkpoints, logging)."""
  c.model = model
  c.pp.image_size = 299
  c.pp.eval.crop_ratio = 0.875
  c.optimizer = ml_collections.ConfigDict(dict(
      name='rmsprop', lr=0.045, lr_batch_size=256, rms_decay=0.9, momentum=0.9, epsilon=1.0, initial_scale=1.0,
      nesterov=False, weight_decay=4e-5, clip_norm=2.0))
  c.schedule.update(name='staircase', decay_rate=0.94, decay_epochs=2, warmup_epochs=0)
  c.loss.update(aux_weight=0.4, label_smoothing=0.1)
  c.ema.update(decay=0.9999, warmup=True)
  c.num_epochs = 100
  return c


def model_config(name: str, **extra) -> ml_collections.ConfigDict:
  """The model keys the TF-style family members take."""
  return ml_collections.ConfigDict(dict(name=name, dtype='float32', dropout_rate=0.2, bn_momentum=0.9997,
                                        bn_epsilon=1e-3, bn_scale=False, **extra))


def mini_variant(c: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """The recipe on the embedded data, sized to train in minutes on 2 CPU cores: 96 px, batch 32, 10 epochs, a faster
  schedule and BatchNorm statistics and averages that follow a short run."""
  mini = googlenet.mini()
  c.workdir = workdir
  c.data = mini.data
  c.pp.image_size = 96
  c.batch_size, c.eval_batch_size = 32, 70
  c.num_epochs = 10
  c.optimizer.lr = 0.045 * 8  # at batch 256: 0.045 at batch 32
  c.schedule.update(decay_rate=0.8, decay_epochs=1, warmup_epochs=1)
  c.model.bn_momentum = 0.9
  c.ema.decay = 0.99
  c.eval_every_epochs, c.log_every_steps, c.checkpoint_every_steps = 5, 25, 100
  return c


def imagenet() -> ml_collections.ConfigDict:
  c = rmsprop_recipe(googlenet.imagenet(), model_config('inception_v3', aux_heads=False, pool_count_padding=False))
  c.workdir = 'runs/inception_v3_imagenet'
  return c


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """'' / 'imagenet': the published recipe; 'mini': the embedded data."""
  if arg in ('', 'imagenet'):
    return imagenet()
  if arg == 'mini':
    return mini_variant(imagenet(), 'runs/inception_v3_mini')
  raise ValueError(f'Unknown inception_v3 config variant {arg!r}; known: \'\', \'imagenet\', \'mini\'.')

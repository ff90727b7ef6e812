"""BN-Inception (Ioffe & Szegedy 2015, "Batch Normalization") with the paper's accelerated recipe (section 4.2.1, its
best single network, BN-x30), on ImageNet at 224 px:

  python -m inception.main --config=configs/bn_inception.py

From the BN paper: the GoogLeNet recipe (SGD, momentum 0.9) with the learning rate raised 30x over its Inception
baseline's 0.0015, to 0.045 (at batch 32, scaled linearly with the batch); dropout removed; L2 weight decay 5x
lower (2e-4 -> 4e-5); the learning-rate decay 6x faster (GoogLeNet's x0.96 every 8 epochs -> every 8 / 6 epochs); LRN
removed (the model has none); the photometric distortions reduced (here: halved); training examples shuffled
thoroughly (the global per-epoch permutation does). The paper's 2.7M steps of batch 32 are ~68 epochs. Not stated in
the paper and taken from GoogLeNet's recipe: the crops, the EMA of the weights, no aux heads (the BN paper's network
has none).

`:mini`: the embedded 10-class Caltech 101 subset at 112 px (minutes on 2 CPU cores):

  python -m inception.main --config=configs/bn_inception.py:mini
"""
import ml_collections

from configs import googlenet


def imagenet() -> ml_collections.ConfigDict:
  c = googlenet.imagenet()
  c.workdir = 'runs/bn_inception_imagenet'
  c.model = ml_collections.ConfigDict(dict(name='bn_inception', dtype='float32', dropout_rate=0.0, bn_momentum=0.9,
                                           bn_epsilon=1e-3))
  c.optimizer.update(lr=0.045, lr_batch_size=32, weight_decay=4e-5)
  c.schedule.update(decay_rate=0.96, decay_epochs=8 / 6)
  for key in ('brightness', 'hue'):
    c.pp.train[key] = c.pp.train[key] / 2
  for key in ('contrast', 'saturation'):
    lo, hi = c.pp.train[key]
    c.pp.train[key] = (1 - (1 - lo) / 2, 1 + (hi - 1) / 2)
  c.loss.aux_weight = 0.0
  c.num_epochs = 68
  return c


def mini() -> ml_collections.ConfigDict:
  """The recipe on the embedded data: googlenet.py:mini's data, schedule and size with this model and its changes."""
  c = imagenet()
  m = googlenet.mini()
  c.workdir = 'runs/bn_inception_mini'
  c.data, c.pp.image_size = m.data, m.pp.image_size
  c.batch_size, c.eval_batch_size, c.num_epochs = m.batch_size, m.eval_batch_size, m.num_epochs
  c.optimizer.lr = 0.1
  c.schedule.update(decay_rate=m.schedule.decay_rate, decay_epochs=m.schedule.decay_epochs, warmup_epochs=1)
  c.loss.label_smoothing = m.loss.label_smoothing
  c.ema.decay = m.ema.decay
  c.eval_every_epochs, c.log_every_steps, c.checkpoint_every_steps = 7, 25, 100
  return c


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """'' / 'imagenet': the published recipe; 'mini': the embedded data."""
  if arg in ('', 'imagenet'):
    return imagenet()
  if arg == 'mini':
    return mini()
  raise ValueError(f"Unknown bn_inception config variant {arg!r}; known: '', 'imagenet', 'mini'.")

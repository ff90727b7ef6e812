"""GoogLeNet ("Going Deeper with Convolutions", Szegedy et al. 2014) training recipes.

No argument: the paper's ImageNet recipe, on TFDS `imagenet2012` (manual download, see README):

  python -m inception.main --config=configs/googlenet.py

`:mini`: the embedded 10-class Caltech 101 subset (data/caltech101-mini) that `make train` runs. It uses the BN variant
(`googlenet_bn`) at 112 px so it learns in minutes on 2 CPU cores; the published network (LRN, no BN) learns far more
slowly from scratch on 800 images. Expect top-1 >= 0.60 on its 210 held-out images within ~10 minutes on 2 cores
(README, "The two commands", has the measured figures):

  python -m inception.main --config=configs/googlenet.py:mini

`:mini_published`: the same data with the published network (LRN, aux heads, dropout 0.4/0.7, Caffe init):

  python -m inception.main --config=configs/googlenet.py:mini_published

`:caltech101`: the full 101-class Caltech 101 image folder (deterministic 80/20 split by file-name hash):

  python -m inception.main --config=configs/googlenet.py:caltech101 --config.data.root=../shared/data/caltech101

Every key below can be overridden on the command line, e.g. `--config.optimizer.lr=0.05 --config.num_epochs=3`.
"""
import ml_collections


def imagenet() -> ml_collections.ConfigDict:
  """The paper's recipe on ImageNet: SGD momentum 0.9, lr x0.96 every 8 epochs, Polyak averaging, aux heads at 0.3."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.workdir = 'runs/googlenet_imagenet'

  # Model: the published network. LRN, real 5x5 branches, two aux heads.
  c.model = ml_collections.ConfigDict(dict(
      name='googlenet',
      dtype='float32',          # compute dtype ('bfloat16' for mixed precision); parameters stay float32
      dropout_rate=0.4,
      aux_dropout_rate=0.7,
      aux_heads=True,
  ))

  # On CPU, the kernels of inception/models/ops.py: the Winograd kernel (`make install` builds it) for 3x3 and 5x5
  # stride-1 float32 convolutions, the 1x1 convolutions' kernel gradients as one matrix product, max-pool gradients
  # without select-and-scatter. Steps lowered for TPU or GPU always use XLA's ops. False: XLA's ops on CPU too; the
  # same results to float32 rounding (docs/performance.md has the speeds).
  c.cpu_kernels = True

  # JAX's persistent compilation cache (inception/compile_cache.py): a restarted or resumed run, and evaluate and
  # predict on it, load the compiled steps instead of compiling again. `{workdir}` is the run's workdir; any folder
  # every host reaches works (gs:// too), e.g. one shared by a sweep's runs. '' = off.
  c.compile_cache = '{workdir}/compile_cache'

  # XLA options every step compiles with, per backend (jax.default_backend()). On CPU, YNNPACK takes only the
  # reductions; convolutions and matrix products go to XLA's own kernels: 1.4x the train step of the published net
  # at 224 px on 2 cores, 1.0-1.1x at 112 px with BN (docs/performance.md). `{}` = XLA's defaults.
  c.compiler_options = ml_collections.ConfigDict(dict(
      cpu=ml_collections.ConfigDict(dict(xla_cpu_experimental_ynn_fusion_type='LIBRARY_FUSION_TYPE_REDUCE')),
      # Added for the steps without gradients (eval, multi-crop, predict): max and min without NaN checks, so a max
      # pool may turn a NaN into its window's largest number. 2.6-3.8% off the eval step on 2 cores.
      cpu_inference=ml_collections.ConfigDict(dict(xla_cpu_enable_fast_min_max=True)),
  ))

  # Data source. `source` picks a class in inception/data/sources.py.
  c.data = ml_collections.ConfigDict(dict(
      source='tfds',
      root='',                  # image folder (source='folder')
      val_fraction=0.2,         # folder without train/ and val/ subfolders: held-out fraction, split by file-name hash
      exclude_classes=(),       # folder: class subfolders left out (configs/finetune.py pretrains without the
                                # embedded classes)
      tfds_name='imagenet2012',
      tfds_data_dir='',         # '' = TFDS default (~/tensorflow_datasets)
      train_split='train',
      eval_split='validation',
      shuffle_buffer=10_000,
      class_share=(),           # (class name, share): every training batch holds round(share x batch_size) examples
                                # of that class, the rest from the others (image folders); () = the plain order
      max_bad_fraction=0.01,    # undecodable training images are skipped and counted; more than this fraction stops
      rows_per_task=32,         # training images one tf.data task decodes in order (a bad one is masked per task,
                                # not per image: docs/performance.md); tasks_per_core of them run at once per host core
      tasks_per_core=2,
  ))

  # Preprocessing: names pick functions in inception/data/preprocess.py.
  c.pp = ml_collections.ConfigDict(dict(
      image_size=224,
      value_range=(-1.0, 1.0),
      mean=(0.0, 0.0, 0.0),             # then (x - mean) / std per RGB channel: kept at 0 / 1 for training from
      std=(1.0, 1.0, 1.0),              # scratch; imported weights set their own (inception.convert)
      train=dict(
          name='inception_crop',
          area_range=(0.08, 1.0),          # the paper: patches of 8%-100% of the image area
          aspect_range=(3 / 4, 4 / 3),     # ... with aspect ratio in [3/4, 4/3]
          crop_sampler='uniform_area',     # area uniform, aspect log-uniform (the paper's words); 'tf': TF-slim's
                                           # sample_distorted_bounding_box (height uniform: median crop ~29% area)
          max_attempts=10,                 # crop tries before falling back to the (aspect-clamped) whole image
          flip=True,
          interpolations=('bilinear', 'bicubic', 'area', 'nearest'),  # chosen at random per image
          # The colour distortions run on the device, in random order, seeded per example (inception/augment.py).
          brightness=32 / 255,
          contrast=(0.5, 1.5),
          saturation=(0.5, 1.5),
          hue=0.2,
      ),
      eval=dict(name='central_crop', crop_ratio=0.875),
  ))

  # Optimisation. Caffe's bvlc_googlenet: lr 0.01 at batch 32, weight decay 2e-4; the learning rate scales linearly
  # with the global batch: lr x batch_size / lr_batch_size (0.08 at batch 256).
  c.batch_size = 256            # global, over all devices and hosts
  c.eval_batch_size = 250
  c.num_epochs = 250.0          # Caffe's 10M iterations at batch 32; fractions too (round(epochs x steps per epoch))
  c.optimizer = ml_collections.ConfigDict(dict(
      name='sgd', lr=0.01, lr_batch_size=32, momentum=0.9, nesterov=False, weight_decay=2e-4))
  c.schedule = ml_collections.ConfigDict(dict(
      name='staircase',         # lr = base x decay_rate ** floor(epoch / decay_epochs)
      decay_rate=0.96,
      decay_epochs=8.0,
      warmup_epochs=0,          # optional linear warm-up from 0
      ))
  c.loss = ml_collections.ConfigDict(dict(aux_weight=0.3, label_smoothing=0.0))
  c.ema = ml_collections.ConfigDict(dict(
      decay=0.9999,
      warmup=True,              # TensorFlow's num_updates: decay_t = min(decay, (1 + t) / (10 + t))
  ))

  # Evaluation, logging, checkpoints.
  c.evaluators = ('classification',)
  c.eval_crops = 1              # crops per image in the loop's evaluation: 1 (cheap), 10 or 144 (data/crops.py)
  c.init_from = ''              # 'WORKDIR[:step]': start from that run's EMA weights (heads re-initialised where the
                                # classes differ; inception/finetune.py)
  c.freeze_backbone = False     # train only the classifier and aux heads (with init_from: a linear probe)
  c.backbone_lr_scale = 1.0     # the backbone's learning rate as a fraction of the heads' (fine-tuning: e.g. 0.1)
  c.eval_every_epochs = 4
  c.log_every_steps = 100
  c.checkpoint_every_steps = 5000
  c.keep_checkpoints = 3
  c.nan_policy = 'stop'         # a non-finite loss or gradient norm: 'stop' the run (exit 1, before any checkpoint of
                                # the bad state), or 'skip' the update and count it (train/nonfinite_steps)
  return c


def mini() -> ml_collections.ConfigDict:
  """The embedded 10-class Caltech 101 subset with the BN variant at 112 px: learns in minutes on 2 CPU cores."""
  c = imagenet()
  c.workdir = 'runs/googlenet_mini'
  c.model.name = 'googlenet_bn'
  c.model.dropout_rate = 0.2
  c.model.bn_momentum = 0.9         # running-statistics momentum of every BatchNorm
  c.model.bn_epsilon = 1e-3
  c.data.source = 'folder'
  c.data.root = 'data/caltech101-mini'
  c.pp.image_size = 112
  c.batch_size = 32
  c.eval_batch_size = 100
  c.num_epochs = 28
  c.optimizer.lr = 0.05
  c.optimizer.weight_decay = 5e-5
  c.schedule.decay_rate = 0.88      # the paper's staircase, compressed to a 28-epoch run (lr x0.032 by the end)
  c.schedule.decay_epochs = 1
  c.schedule.warmup_epochs = 1
  c.loss.label_smoothing = 0.1
  c.ema.decay = 0.99
  c.eval_every_epochs = 14
  c.log_every_steps = 25
  c.checkpoint_every_steps = 100
  return c


def mini_published() -> ml_collections.ConfigDict:
  """The published GoogLeNet (LRN, aux heads, Caffe init) on the embedded data."""
  c = mini()
  c.workdir = 'runs/googlenet_published_mini'
  c.model = imagenet().model        # the published network: no BatchNorm keys
  c.optimizer.lr = 0.01
  c.num_epochs = 30
  return c


def caltech101() -> ml_collections.ConfigDict:
  """The full Caltech 101 image folder (101 classes, ~8.7k images) with the BN variant at 128 px."""
  c = mini()
  c.workdir = 'runs/googlenet_caltech101'
  c.data.root = '../shared/data/caltech101'
  c.pp.image_size = 128
  c.batch_size = 64
  c.optimizer.lr = 0.05           # at batch 32: 0.1 at batch 64
  c.num_epochs = 30
  c.schedule.decay_rate = 0.9
  c.schedule.decay_epochs = 1
  c.ema.decay = 0.998
  c.log_every_steps = 50
  c.checkpoint_every_steps = 500
  return c


VARIANTS = {'': imagenet, 'imagenet': imagenet, 'mini': mini, 'mini_published': mini_published,
            'caltech101': caltech101}


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the recipe named by `arg` (see the module docstring)."""
  if arg not in VARIANTS:
    raise ValueError(f'Unknown googlenet config variant {arg!r}; known: {", ".join(repr(k) for k in VARIANTS)}.')
  return VARIANTS[arg]()


def sweep(arg: str = '') -> list:
  """Studies for `python -m launch.sweep`: override dicts, one per run. `mini`: learning rate x weight decay, 2x2 (the
  `mini` recipe's 0.05 / 5e-5, twice the learning rate, the paper's 2e-4 decay), ~10 min a run on 2 CPU cores:

    python -m launch.sweep --config=configs/googlenet.py:mini --root=runs/sweep_mini
  """
  studies = {'mini': lambda: [{'optimizer.lr': lr, 'optimizer.weight_decay': wd}
                              for lr in (0.05, 0.1) for wd in (5e-5, 2e-4)]}
  if arg not in studies:
    raise ValueError(f'No sweep for googlenet config variant {arg!r}; variants with a sweep: '
                     f'{", ".join(repr(k) for k in studies)}.')
  return studies[arg]()

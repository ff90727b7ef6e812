"""Learning-rate schedules, the optimizer and Polyak (EMA) parameter averaging, all built from the config."""
import jax
import jax.numpy as jnp
import ml_collections
import optax

from inception.registry import Registry

SCHEDULES = Registry('schedule')


@SCHEDULES.register('staircase')
def staircase(cfg: ml_collections.ConfigDict, base_lr: float, steps_per_epoch: int, total_steps: int):
  """The paper's schedule: base x decay_rate ** floor(epoch / decay_epochs), after an optional linear warm-up."""
  del total_steps
  decay = optax.exponential_decay(
      base_lr, transition_steps=max(1, round(cfg.decay_epochs * steps_per_epoch)), decay_rate=cfg.decay_rate,
      staircase=True)
  return _with_warmup(decay, base_lr, round(cfg.warmup_epochs * steps_per_epoch))


@SCHEDULES.register('cosine')
def cosine(cfg: ml_collections.ConfigDict, base_lr: float, steps_per_epoch: int, total_steps: int):
  """Cosine decay to zero over the run, after an optional linear warm-up."""
  warmup = round(cfg.warmup_epochs * steps_per_epoch)
  return _with_warmup(optax.cosine_decay_schedule(base_lr, max(1, total_steps - warmup)), base_lr, warmup)


def _with_warmup(schedule, base_lr: float, warmup_steps: int):
  """Prepends a linear ramp over `warmup_steps`: step s < warmup_steps gets base_lr * (s + 1) / warmup_steps, so the
  first step already learns and the last warm-up step reaches base_lr; the decay counts from the start of the run."""
  if warmup_steps <= 0:
    return schedule
  ramp = optax.linear_schedule(base_lr / warmup_steps, base_lr, max(1, warmup_steps - 1))
  return lambda step: jnp.where(step < warmup_steps, ramp(step), schedule(step))


def base_lr(config: ml_collections.ConfigDict) -> float:
  """The peak learning rate: `optimizer.lr`, tuned at batch `optimizer.lr_batch_size`, scaled linearly to the global
  `batch_size` (Goyal et al. 2017; pair large batches with `schedule.warmup_epochs`)."""
  return config.optimizer.lr * config.batch_size / config.optimizer.lr_batch_size


def make_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int):
  """The learning rate as a function of the step, named by `config.schedule.name`."""
  fn = SCHEDULES.get(config.schedule.name)
  return fn(config.schedule, base_lr(config), steps_per_epoch, total_steps)


def decay_mask(params):
  """True for the leaves that get weight decay: kernels, not biases or norm scales/offsets (all 1-D)."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(config: ml_collections.ConfigDict, schedule) -> optax.GradientTransformation:
  """`optimizer.name`: 'sgd' (momentum, Caffe's recipe) or 'rmsprop' (TF's RMSProp as Inception-v3 and later used it:
  `decay`, `momentum`, `epsilon` inside the square root, accumulators starting at `initial_scale`); either with
  L2 weight decay on kernels only, then the gradients clipped to `clip_norm` (global norm; 0 or absent: no clipping)."""
  opt = config.optimizer
  if opt.name == 'sgd':
    update = optax.sgd(schedule, momentum=opt.momentum, nesterov=opt.nesterov)
  elif opt.name == 'rmsprop':
    update = optax.rmsprop(schedule, decay=opt.rms_decay, eps=opt.epsilon, initial_scale=opt.initial_scale,
                           eps_in_sqrt=True, momentum=opt.momentum, nesterov=opt.nesterov)
  else:
    raise ValueError(f'Unknown optimizer {opt.name!r}; known: sgd, rmsprop.')
  clip = [optax.clip_by_global_norm(opt.clip_norm)] if opt.get('clip_norm') else []
  # The decay joins the gradient before the clip, as TF-slim adds its regularisation loss to the loss it clips.
  return optax.chain(optax.add_decayed_weights(opt.weight_decay, mask=decay_mask), *clip, update)


def ema_decay(cfg: ml_collections.ConfigDict, step: jax.Array) -> jax.Array:
  """The averaging decay at `step`; with `warmup`, TensorFlow's min(decay, (1 + t) / (10 + t)) so early steps count."""
  if not cfg.warmup:
    return jnp.asarray(cfg.decay, jnp.float32)
  t = step.astype(jnp.float32)
  return jnp.minimum(cfg.decay, (1.0 + t) / (10.0 + t))


def ema_update(ema, new, decay: jax.Array):
  """One Polyak step: ema <- decay * ema + (1 - decay) * new, leaf by leaf."""
  return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, new)

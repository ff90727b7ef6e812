"""The train state and the jitted steps: pure functions of arrays, no I/O.

The NNX model is split once, outside the steps, into a static graph definition and array state (parameters, batch
statistics); the steps merge them back inside the trace. So jit, sharding and orbax only ever see pytrees of arrays.
Each step traces its model under `config.cpu_kernels` (models/ops.py).
"""
from typing import Any, Callable, Dict, Optional, Tuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from inception import augment
from inception import optim
from inception.models import ops


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue exactly: weights, optimizer, averages, step and the RNG."""
  step: jax.Array          # int32 []
  params: Any              # nnx.State of nnx.Param
  model_state: Any         # nnx.State of everything else the model holds (BatchNorm statistics); may be empty
  opt_state: Any
  ema_params: Any
  ema_model_state: Any
  rng: jax.Array           # uint32 [2]: raw key data; the step's dropout key is fold_in(rng, step)


def create_train_state(model: nnx.Module, tx: optax.GradientTransformation, seed: int) -> Tuple[Any, TrainState]:
  """Splits `model` into its graph definition (static) and a fresh TrainState (arrays)."""
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
  state = TrainState(
      step=jnp.zeros((), jnp.int32), params=params, model_state=model_state, opt_state=tx.init(params),
      # The averages start as copies: separate buffers, so the jitted step may donate every leaf.
      ema_params=jax.tree.map(jnp.copy, params), ema_model_state=jax.tree.map(jnp.copy, model_state),
      rng=jax.random.key_data(jax.random.key(seed)).astype(jnp.uint32))
  return graphdef, state


def cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array, label_smoothing: float) -> jax.Array:
  """Softmax cross-entropy against one-hot labels smoothed by `label_smoothing`, averaged over the rows whose `mask` is
  1 (undecodable images are masked out); logits [B, C], labels [B], mask [B]."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  losses = optax.softmax_cross_entropy(logits, targets)
  return jnp.sum(jnp.where(mask > 0, losses, 0.0)) / jnp.maximum(jnp.sum(mask), 1.0)


# A task's loss (inception/tasks.py): (outputs, aux_outputs, batch) -> (the loss to minimise, metrics), where the
# metrics are scalars and hold 'loss', the main loss (the run stops or skips the step when it is not finite).
TaskLoss = Callable[[jax.Array, Tuple[jax.Array, ...], Dict[str, jax.Array]], Tuple[jax.Array, Dict[str, jax.Array]]]


def classification_loss(config: ml_collections.ConfigDict) -> TaskLoss:
  """The classification loss of config.loss: softmax cross-entropy of the main head plus `aux_weight` times the aux
  heads', `label_smoothing` applied to all; metrics 'loss' (the main head's) and 'top1'. Masked rows count for
  nothing."""
  loss_cfg = config.loss

  def loss(logits, aux_logits, batch):
    labels, mask = batch['label'], batch['mask']
    main_loss = cross_entropy(logits, labels, mask, loss_cfg.label_smoothing)
    aux_loss = sum((cross_entropy(a, labels, mask, loss_cfg.label_smoothing) for a in aux_logits), 0.0)
    top1 = jnp.sum(jnp.where(mask > 0, jnp.argmax(logits, -1) == labels, False)) / jnp.maximum(jnp.sum(mask), 1)
    return main_loss + loss_cfg.aux_weight * aux_loss, {'loss': main_loss, 'top1': top1}

  return loss


def make_train_step(graphdef, tx: optax.GradientTransformation, schedule: Callable,
                    config: ml_collections.ConfigDict, loss: Optional[TaskLoss] = None
                    ) -> Callable[[TrainState, Dict[str, jax.Array]], Any]:
  """Returns train_step(state, batch) -> (state, metrics) for a model graph in training mode.

  `batch` holds the host's uint8 images with per-example seeds; the step applies the colour distortions and the
  scaling of config.pp (augment.train_images) before the model. `loss` is the task's (tasks.py); None: the
  classification loss (classification_loss).

  A step whose loss or gradient norm is not finite leaves the weights, optimizer state and averages as they were (only
  the step count moves on) and reports `finite` = 0: the loop stops the run or counts the step (config.nan_policy).
  """
  ema_cfg = config.ema
  task_loss = classification_loss(config) if loss is None else loss
  train_pp = augment.stage_pp(config.pp, 'train')

  def train_step(state: TrainState, batch: Dict[str, jax.Array]):
    dropout_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    mask = batch['mask']
    # uint8 -> distorted float32, materialized once: without the barrier XLA:CPU fused the distortions into both of
    # the stem's readers (the convolution and its kernel gradient's transpose), computing them twice.
    images = jax.lax.optimization_barrier(augment.train_images(batch['image'], batch['seed'], train_pp))

    def loss_fn(params):
      # copy=True: fresh Variables at this (grad) trace level, so BatchNorm may update its statistics here.
      model = nnx.merge(graphdef, params, state.model_state, copy=True)
      outputs, aux_outputs = model(images, rngs=nnx.Rngs(dropout=dropout_key))
      total, task_metrics = task_loss(outputs, aux_outputs, batch)
      _, _, model_state = nnx.split(model, nnx.Param, ...)
      return total, (task_metrics, model_state)

    grads, (task_metrics, model_state) = jax.grad(loss_fn, has_aux=True)(state.params)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(task_metrics['loss']) & jnp.isfinite(grad_norm)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    decay = optim.ema_decay(ema_cfg, state.step)
    updated = dict(
        params=params, model_state=model_state, opt_state=opt_state,
        ema_params=optim.ema_update(state.ema_params, params, decay),
        ema_model_state=optim.ema_update(state.ema_model_state, model_state, decay))
    kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated,
                        {name: getattr(state, name) for name in updated})
    new_state = state.replace(step=state.step + 1, **kept)
    metrics = {
        **task_metrics,
        'lr': schedule(state.step),
        'grad_norm': grad_norm,
        'finite': finite.astype(jnp.float32),
        'skipped_images': jnp.sum(mask <= 0).astype(jnp.float32),
    }
    return new_state, metrics

  return ops.traced_with(ops.setting(config), train_step)


def make_eval_step(graphdef, config: ml_collections.ConfigDict
                   ) -> Callable[[Any, Any, Dict[str, jax.Array]], Dict[str, jax.Array]]:
  """Returns eval_step(params, model_state, batch) -> summed metrics, for a model graph in eval mode; the batch's
  uint8 images are scaled to config.pp's eval value range first.

  Sums (not means) over the examples whose `mask` is 1, so padded examples never count and batches add up exactly.
  """

  eval_pp = augment.stage_pp(config.pp, 'eval')

  def eval_step(params, model_state, batch: Dict[str, jax.Array]):
    model = nnx.merge(graphdef, params, model_state)
    logits, _ = model(augment.eval_images(batch['image'], eval_pp))
    labels, mask = batch['label'], batch['mask']
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    top5 = jax.lax.top_k(logits, 5)[1] if logits.shape[-1] >= 5 else jnp.argsort(-logits, axis=-1)
    real = mask > 0  # `where`, not multiplication: a NaN on a padding row must not reach the sums
    return {
        'loss': jnp.sum(jnp.where(real, losses, 0.0)),
        'top1': jnp.sum(real & (jnp.argmax(logits, -1) == labels)),
        'top5': jnp.sum(real & jnp.any(top5 == labels[:, None], axis=-1)),
        'count': jnp.sum(real),
    }

  return ops.traced_with(ops.setting(config), eval_step)


def make_predict_step(graphdef, config: ml_collections.ConfigDict
                      ) -> Callable[[Any, Any, Dict[str, jax.Array]], Dict[str, jax.Array]]:
  """Returns predict_step(params, model_state, batch) -> {'probs': float32 [B, C]}: the softmax of a model graph in
  eval mode on the batch's uint8 images (scaled as make_eval_step does). Multi-crop evaluation averages these over
  an image's crops, as the paper does (averaging beats taking the maximum)."""
  eval_pp = augment.stage_pp(config.pp, 'eval')

  def predict_step(params, model_state, batch: Dict[str, jax.Array]):
    model = nnx.merge(graphdef, params, model_state)
    logits, _ = model(augment.eval_images(batch['image'], eval_pp))
    return {'probs': jax.nn.softmax(logits.astype(jnp.float32), axis=-1)}

  return ops.traced_with(ops.setting(config), predict_step)

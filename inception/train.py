"""Training and evaluation, top to bottom: data, mesh, model, optimizer, checkpoint, loop, final evaluation.

Everything this file does is decided by the config (configs/*.py); the jitted steps live in steps.py and stay pure,
while this loop does the I/O around them: input batches, logs, evaluations and checkpoints.
"""
import json
from typing import Dict, Optional, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath
from flax import nnx

from inception import checkpoint, metrics, models, optim, sharding, steps
from inception.data import pipeline
from inception.evaluators import EVALUATORS


def train_and_evaluate(config: ml_collections.ConfigDict,
                       devices: Optional[Sequence[jax.Device]] = None) -> Dict[str, float]:
  """Trains `config` in `config.workdir` (resuming from its latest checkpoint) and returns the final evaluation."""
  # ---------------------------------------------------------------- Data (first: a missing dataset writes nothing)
  source = pipeline.build_source(config)
  num_train = source.num_examples('train')
  steps_per_epoch = max(1, num_train // config.batch_size)
  total_steps = int(round(config.num_epochs * steps_per_epoch))

  # ---------------------------------------------------------------- Mesh
  mesh = sharding.make_mesh(devices)
  sharding.check_batch_size(config.batch_size, mesh)
  sharding.check_batch_size(config.eval_batch_size, mesh, 'eval_batch_size')
  repl = sharding.replicated(mesh)

  # ---------------------------------------------------------------- Workdir (local or gs://; process 0 writes files)
  workdir = epath.Path(config.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  if jax.process_index() == 0:
    (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2))
  logging.info('Training on %d examples of %d classes (%d eval), %d steps of %d (%d per epoch), %d devices in %d '
               'processes.', num_train, source.num_classes, source.num_examples('eval'), total_steps,
               config.batch_size, steps_per_epoch, mesh.devices.size, jax.process_count())

  # ---------------------------------------------------------------- Model, optimizer, train state
  model = models.build(config.model, num_classes=source.num_classes, image_size=config.pp.image_size,
                       rngs=nnx.Rngs(params=config.seed))
  schedule = optim.make_schedule(config, steps_per_epoch, total_steps)
  logging.info('Learning rate %g: %g tuned for batch %d, scaled linearly to batch %d.', optim.base_lr(config),
               config.optimizer.lr, config.optimizer.lr_batch_size, config.batch_size)
  tx = optim.make_optimizer(config, schedule)
  model.train()
  train_graphdef, state = steps.create_train_state(model, tx, config.seed)
  model.eval()
  eval_graphdef, _, _ = nnx.split(model, nnx.Param, ...)
  del model
  state = jax.device_put(state, repl)

  # ---------------------------------------------------------------- Checkpoint: resume when the workdir has one
  ckpt = checkpoint.Checkpointer(workdir, config.checkpoint_every_steps, config.keep_checkpoints)
  position, skipped = 0, 0
  if ckpt.latest_step() is not None:
    state, meta = ckpt.restore(state)
    position, skipped = meta['position'], meta['skipped']
    logging.info('Resumed from step %d (input position %d).', int(state.step), position)
  start_step = int(state.step)
  writer = metrics.MetricWriter(workdir, resume_step=start_step)

  # ---------------------------------------------------------------- Steps and evaluators
  train_step = jax.jit(steps.make_train_step(train_graphdef, tx, schedule, config),
                       in_shardings=(repl, sharding.data_sharded(mesh)), out_shardings=(repl, repl),
                       donate_argnums=0)
  evaluators = {name: EVALUATORS.get(name)(config, eval_graphdef, mesh, source) for name in config.evaluators}

  def evaluate(step: int) -> Dict[str, float]:
    results = {}
    for evaluator in evaluators.values():
      results.update(evaluator.run(state))
    writer.write(step, results)
    logging.info('eval @ step %d: %s', step, ' '.join(f'{k}={v:.4f}' for k, v in sorted(results.items())))
    return results

  # ---------------------------------------------------------------- Loop
  batches = pipeline.train_batches(config, process_index=jax.process_index(), process_count=jax.process_count(),
                                   start_position=position, source=source)
  counter = pipeline.SkipCounter(start_position=position, skipped=skipped)
  eval_every = max(1, int(round(config.eval_every_epochs * steps_per_epoch)))
  throughput = metrics.Throughput(start_step)
  pending = []
  for step in range(start_step + 1, total_steps + 1):
    batch = next(batches)
    counter.update(batch.pop('index'))
    state, step_metrics = train_step(state, sharding.to_global(batch, mesh))
    pending.append(step_metrics)

    if step % config.log_every_steps == 0 or step == total_steps:
      means = {k: float(np.mean([m[k] for m in jax.device_get(pending)])) for k in pending[0]}
      pending = []
      rate, eta = throughput.report(step, total_steps, config.batch_size)
      writer.write(step, {f'train/{k}': v for k, v in means.items()} | {
          'train/images_per_s': rate, 'train/epoch': step / steps_per_epoch,
          'train/skipped_images': counter.skipped})
      logging.info('step %d/%d epoch %.2f loss %.4f top1 %.3f lr %.5f %.1f img/s ETA %s', step, total_steps,
                   step / steps_per_epoch, means['loss'], means['top1'], means['lr'], rate,
                   metrics.format_duration(eta))
    if step % eval_every == 0 and step != total_steps:
      evaluate(step)
    ckpt.maybe_save(step, state, counter.position, counter.skipped, force=step == total_steps)

  # ---------------------------------------------------------------- Final evaluation
  ckpt.maybe_save(total_steps, state, counter.position, counter.skipped, force=True)
  results = evaluate(total_steps)
  ckpt.wait()
  ckpt.close()
  writer.close()
  if jax.process_index() == 0:
    (workdir / 'final_eval.json').write_text(json.dumps(results, indent=2))
  if counter.skipped or results.get('eval/skipped_images'):
    logging.warning('Skipped undecodable images: %d in training, %d in evaluation.', counter.skipped,
                    results.get('eval/skipped_images', 0))
  return results


def final_line(results: Dict[str, float]) -> str:
  """The run's last line: EMA-weight accuracy first (as `top1=`/`top5=`), then the raw weights."""
  return (f'final eval (EMA weights, {int(results["eval/examples"])} images): '
          f'top1={results["eval_ema/top1"]:.4f} top5={results["eval_ema/top5"]:.4f} '
          f'loss={results["eval_ema/loss"]:.4f} | raw weights: raw_top1={results["eval/top1"]:.4f} '
          f'raw_top5={results["eval/top5"]:.4f} | skipped images: {int(results["eval/skipped_images"])}')

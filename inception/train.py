"""Training and evaluation, top to bottom: data, mesh, model, optimizer, checkpoint, loop, final evaluation.

Everything this file does is decided by the config (configs/*.py); the jitted steps live in steps.py and stay pure,
while this loop does the I/O around them: input batches, logs, evaluations and checkpoints.
"""
import collections
import itertools
import json
from typing import Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from etils import epath
from flax import nnx

from inception import checkpoint, compiler_options, config_checks, distributed, finetune, metrics, models, optim, preemption, sharding
from inception import steps, tasks
from inception import workdir as workdir_lib
from inception.errors import DivergedError, WorkdirError
from inception.data import pipeline
from inception.evaluators import EVALUATORS

# How many steps the host may dispatch ahead of the device. A stop is agreed at the check after the host's step, so
# the checkpoint comes at most this many device steps (plus one) after the signal; unbounded, the host runs up to a log
# interval ahead (it waits for the device only to log), on `:mini` 25 steps or a minute on 2 cores, twice a spot VM's
# 30 s grace period. Two steps in flight keep the device as busy as more.
MAX_AHEAD = 2


def train_and_evaluate(config: ml_collections.ConfigDict,
                       devices: Optional[Sequence[jax.Device]] = None) -> Dict[str, float]:
  """Trains `config` in `config.workdir` (resuming from its latest checkpoint) and returns the final evaluation.

  Expected failures raise inception.errors.UserError subclasses before anything is written where possible. SIGTERM or
  SIGINT (caught from here on, or earlier with preemption.catch_signals) raises preemption.Preempted at the next check
  every process agrees on (inception/preemption.py): after a step or an evaluation once that step's checkpoint is on
  disk, or before the first step with nothing new to save. During the final evaluation the run finishes instead.
  """
  with preemption.PreemptionWatcher(multi_process=jax.process_count() > 1, client=distributed.client(),
                                    process_index=jax.process_index(),
                                    process_count=jax.process_count()) as watcher:
    return _train_and_evaluate(config, devices, watcher)


def _train_and_evaluate(config: ml_collections.ConfigDict, devices: Optional[Sequence[jax.Device]],
                        watcher: preemption.PreemptionWatcher) -> Dict[str, float]:
  # ---------------------------------------------------------------- Config and data (a bad one writes nothing)
  config_checks.check_config(config)
  models.check_model_config(config.model, config.pp.image_size)
  source = pipeline.build_source(config)
  num_train = source.num_examples('train')
  if config.batch_size > num_train:
    raise config_checks.ConfigError(f'--config.batch_size={config.batch_size} is larger than the {num_train} '
                                    f'training images: use at most {num_train}.')
  pipeline.check_decodable(config, source)
  steps_per_epoch = num_train // config.batch_size
  total_steps = int(round(config.num_epochs * steps_per_epoch))
  if total_steps < 1:
    raise config_checks.ConfigError(f'--config.num_epochs={config.num_epochs} gives no training step at '
                                    f'{steps_per_epoch} steps per epoch: raise it.')

  # ---------------------------------------------------------------- Mesh
  mesh = sharding.make_mesh(devices)
  sharding.check_batch_size(config.batch_size, mesh)
  sharding.check_batch_size(config.eval_batch_size, mesh, 'eval_batch_size')
  repl = sharding.replicated(mesh)

  # ---------------------------------------------------------------- Workdir (local or gs://; process 0 writes files)
  workdir = epath.Path(config.workdir)
  workdir_lib.check_writable(workdir)
  if (workdir / 'checkpoints').exists():
    workdir_lib.check_writable(workdir / 'checkpoints')
  ckpt = checkpoint.Checkpointer(workdir, config.checkpoint_every_steps, config.keep_checkpoints, identity={
      'model': config.model.name, 'num_classes': source.num_classes, 'image_size': config.pp.image_size})
  changes = workdir_lib.check_resume(workdir, config, has_checkpoint=bool(ckpt.all_steps()))
  task = tasks.build(config, source, workdir, resuming=bool(ckpt.all_steps()))  # what the steps train (tasks.py)
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
  head_names = ('head',) + tuple(model.aux_names)  # the parts that depend on the classes (finetune.py)
  tx = finetune.optimizer(tx, config, head_names)  # freeze_backbone / backbone_lr_scale
  model.train()
  train_graphdef, state = steps.create_train_state(model, tx, config.seed)
  if config.get('init_from') and not ckpt.all_steps():  # a resumed run has its fine-tuned weights already
    params, model_state, _ = finetune.initialize_from(config.init_from, state.params, state.model_state, head_names,
                                                      config)
    state = state.replace(params=params, model_state=model_state, opt_state=tx.init(params),
                          ema_params=jax.tree.map(jnp.copy, params),
                          ema_model_state=jax.tree.map(jnp.copy, model_state))
  model.eval()
  eval_graphdef, _, _ = nnx.split(model, nnx.Param, ...)
  del model
  state = jax.device_put(state, repl)

  # ---------------------------------------------------------------- Checkpoint: resume when the workdir has one
  counts = {'train_skipped_images': 0, 'nonfinite_steps': 0}  # global, carried in every checkpoint
  if ckpt.all_steps():
    state, meta = ckpt.restore(state)
    counts = {k: int(meta.get(k, 0)) for k in counts}
    _check_resumable(meta, source, int(state.step), total_steps, workdir)
    logging.info('Resumed from step %d.%s', int(state.step),
                 f' Config changes: {"; ".join(changes)}.' if changes else '')
  start_step = int(state.step)
  if jax.process_index() == 0:
    workdir_lib.write_config(workdir, config, start_step)
    workdir_lib.write_class_names(workdir, source.class_names)
    task.write_files(workdir)
  writer = metrics.MetricWriter(workdir, resume_step=start_step)
  _stop_before_training(watcher, start_step, total_steps, writer, ckpt)  # signalled while starting: compile nothing

  # ---------------------------------------------------------------- Steps and evaluators
  train_step = jax.jit(steps.make_train_step(train_graphdef, tx, schedule, config, task.loss),
                       in_shardings=(repl, sharding.data_sharded(mesh)), out_shardings=(repl, repl),
                       donate_argnums=0, compiler_options=compiler_options.for_backend(config))
  evaluators = {name: EVALUATORS.get(name)(config, eval_graphdef, mesh, source, task=task)
                for name in config.evaluators}

  def evaluate(step: int) -> Dict[str, float]:
    results = {}
    for evaluator in evaluators.values():
      results.update(evaluator.run(state))
    writer.write(step, results)
    logging.info('eval @ step %d: %s', step, ' '.join(f'{k}={v:.4f}' for k, v in sorted(results.items())))
    return results

  # ---------------------------------------------------------------- Loop
  batches = pipeline.train_batches(config, process_index=jax.process_index(), process_count=jax.process_count(),
                                   start_step=start_step, source=source)
  guard = pipeline.BadImageGuard(config.data.max_bad_fraction, min_examples=min(num_train, 256))
  eval_every = max(1, int(round(config.eval_every_epochs * steps_per_epoch)))
  if start_step < total_steps:
    # Compile before the first step, where a signal ends the process at once (a compilation can outlast a grace
    # period). With several processes, meet after it: a process still compiling when another runs the first step
    # would miss the CPU collectives' 30 s window (the coordination service's barrier waits minutes).
    with watcher.interruptible(f'at step {start_step} of {total_steps}, while compiling'):
      first = next(batches)
      batches = itertools.chain([first], batches)
      train_step = train_step.lower(state, sharding.to_global(
          {k: v for k, v in first.items() if k != 'index'}, mesh)).compile()
      distributed.barrier('train_step_compiled')
  _stop_before_training(watcher, start_step, total_steps, writer, ckpt, keep=(batches, evaluators))  # agreed later
  throughput = metrics.Throughput(start_step)
  history = metrics.StepHistory()
  in_flight = collections.deque()  # the last steps' metrics, to keep the host at most MAX_AHEAD steps ahead
  for step in range(start_step + 1, total_steps + 1):
    batch = next(batches)
    batch.pop('index')
    guard.update(batch['mask'])
    state, step_metrics = train_step(state, sharding.to_global(batch, mesh))
    history.add(step, step_metrics)
    in_flight.append(step_metrics)
    if len(in_flight) > MAX_AHEAD:
      jax.block_until_ready(in_flight.popleft())
    stop = watcher.should_stop(step)
    save = stop or step == total_steps or step % config.checkpoint_every_steps == 0

    if save or step % config.log_every_steps == 0:
      _check_finite(history.fetch(), counts, config.nan_policy, ckpt)  # before any save of this state
    if step % config.log_every_steps == 0 or step == total_steps:
      means = history.means()
      rate, eta = throughput.report(step, total_steps, config.batch_size)
      writer.write(step, {f'train/{k}': v for k, v in means.items()} | {
          'train/images_per_s': rate, 'train/epoch': step / steps_per_epoch,
          'train/skipped_images': counts['train_skipped_images'], 'train/nonfinite_steps': counts['nonfinite_steps']})
      task_means = ' '.join(f'{k} {v:.3f}' for k, v in sorted(means.items()) if k not in ('loss', 'lr', 'grad_norm'))
      logging.info('step %d/%d epoch %.2f loss %.4f %s lr %.5f %.1f img/s ETA %s', step, total_steps,
                   step / steps_per_epoch, means.get('loss', float('nan')), task_means, means['lr'], rate,
                   metrics.format_duration(eta))
    if step % eval_every == 0 and step != total_steps and not stop:
      evaluate(step)
      if watcher.should_stop(step):  # a signal during the evaluation: stop at this step
        if not save:
          _check_finite(history.fetch(), counts, config.nan_policy, ckpt)
        stop = save = True
    if save:
      ckpt.maybe_save(step, state, counts, force=True)
    if stop:
      ckpt.wait()
      ckpt.close()
      writer.close()
      logging.warning('Stopped by %s at step %d of %d: the checkpoint is on disk; exiting with %d so the launcher '
                      'runs the job again.', watcher.signal_name, step, total_steps, preemption.EXIT_PREEMPTED)
      preemption.exit_when_done(preemption.EXIT_PREEMPTED, keep=(batches, evaluators))
      raise preemption.Preempted(watcher.signal_name, step)

  # ---------------------------------------------------------------- Final evaluation
  ckpt.maybe_save(total_steps, state, counts, force=True)  # no-op unless the loop ran no step
  results = evaluate(total_steps)
  ckpt.wait()
  ckpt.close()
  writer.close()
  results = {**results, 'train/skipped_images': counts['train_skipped_images'],
             'train/nonfinite_steps': counts['nonfinite_steps']}
  if jax.process_index() == 0:
    (workdir / 'final_eval.json').write_text(json.dumps(results, indent=2))
  if counts['train_skipped_images'] or results.get('eval/skipped_images'):
    logging.warning('Skipped undecodable images: %d in training (image-steps), %d in evaluation.',
                    counts['train_skipped_images'], results.get('eval/skipped_images', 0))
  preemption.exit_when_done(0, keep=(batches, evaluators))  # the command ends without its slow teardown
  return results


def _stop_before_training(watcher: preemption.PreemptionWatcher, start_step: int, total_steps: int, writer, ckpt,
                          keep=()) -> None:
  """A check point before the first step: raises preemption.Preempted (nothing new to save) at the agreed one."""
  if not watcher.should_stop(start_step):
    return
  ckpt.close()
  writer.close()
  logging.warning('Stopped by %s at step %d of %d, before training further: nothing new to save; exiting with %d so '
                  'the launcher runs the job again.', watcher.signal_name, start_step, total_steps,
                  preemption.EXIT_PREEMPTED)
  preemption.exit_when_done(preemption.EXIT_PREEMPTED, keep=keep)
  raise preemption.Preempted(watcher.signal_name, start_step, saved=False)


def _check_resumable(meta, source, step: int, total_steps: int, workdir) -> None:
  """WorkdirError when the restored run cannot continue under this config (see workdir.py for config changes)."""
  if step > total_steps:
    raise WorkdirError(f'{workdir} holds a run at step {step}, past this config\'s {total_steps} steps (fewer epochs or '
                       f'a larger batch). Raise --config.num_epochs to continue it, or use a new --config.workdir.')
  written_by = int(meta.get('process_count', jax.process_count()))
  if not source.random_access and written_by != jax.process_count():
    raise WorkdirError(f'The checkpoint was written by {written_by} processes and this run has '
                       f'{jax.process_count()}: a source read in order (TFDS TFRecord) resumes only on as many '
                       f'processes. Run on {written_by} processes, or prepare the dataset as ArrayRecord '
                       f'(`tfds build --file_format=array_record`) for resumes on any number of hosts.')


def _check_finite(fetched, counts: Dict[str, int], nan_policy: str, ckpt) -> None:
  """Counts skipped images and non-finite steps of newly fetched steps; DivergedError on one when policy is 'stop'."""
  for step, values in fetched:
    counts['train_skipped_images'] += int(values['skipped_images'])
    if values['finite']:
      continue
    counts['nonfinite_steps'] += 1
    if nan_policy == 'stop':
      ckpt.wait()
      last = ckpt.latest_step()
      raise DivergedError(
          f'Step {step}: the loss is {values["loss"]} and the gradient norm {values["grad_norm"]} (learning rate '
          f'{values["lr"]:g}); stopping before any checkpoint of this state. The last good checkpoint is '
          f'{"step %d" % last if last is not None else "none (no checkpoint yet)"}. Lower --config.optimizer.lr (or '
          f'add --config.schedule.warmup_epochs), or pass --config.nan_policy=skip to skip such updates.')
    logging.warning('Step %d: non-finite loss %s / gradient norm %s: update skipped (nan_policy=skip; %d so far).',
                    step, values['loss'], values['grad_norm'], counts['nonfinite_steps'])


def final_line(results: Dict[str, float]) -> str:
  """The run's last line: EMA-weight accuracy first (as `top1=`/`top5=`), then the raw weights, then the undecodable
  images left out (training: image reads over the run, so a bad file counts once per epoch; evaluation: files). A
  task other than classification (no top1) shows its own figures the same way, EMA weights first."""
  skipped = (f'skipped images: train {int(results.get("train/skipped_images", 0))}'
             f', eval {int(results["eval/skipped_images"])}')
  if 'eval_ema/top1' not in results:
    ema = ' '.join(f'{k.split("/", 1)[1]}={v:.4f}' for k, v in sorted(results.items()) if k.startswith('eval_ema/'))
    raw = ' '.join(f'raw_{k.split("/", 1)[1]}={v:.4f}' for k, v in sorted(results.items())
                   if k.startswith('eval/') and f'eval_ema/{k.split("/", 1)[1]}' in results)
    return f'final eval (EMA weights, {int(results["eval/examples"])} images): {ema} | raw weights: {raw} | {skipped}'
  return (f'final eval (EMA weights, {int(results["eval/examples"])} images): '
          f'top1={results["eval_ema/top1"]:.4f} top5={results["eval_ema/top5"]:.4f} '
          f'loss={results["eval_ema/loss"]:.4f} | raw weights: raw_top1={results["eval/top1"]:.4f} '
          f'raw_top5={results["eval/top5"]:.4f} | {skipped}')

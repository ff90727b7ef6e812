"""Throughput of the real train step, eval step or training input pipeline, for any config:

  python -m inception.benchmark --config=configs/googlenet.py:mini --mode=train [--batch=32] [--image-size=112] \
      [--steps=10] [--dtype=float32|bfloat16] [--json=FILE] [--profile=DIR]
  python -m inception.benchmark --config=configs/googlenet.py:mini --mode=input [--data=FOLDER]

train / eval: the loop's own jitted steps (loss, aux heads, optimizer, EMA; or the eval step) on synthetic data already
on the devices, timed over --steps steps after compilation (reported apart), with the FLOP/s the compiled program's
cost analysis implies and, where the device's peak is known, its share. input: the training input pipeline (decode,
crop, distort, batch, transfer to the devices) over the config's data or --data, no model. The last line is
`images/s: X`; --json writes every figure; --profile writes a profiler trace of the timed steps (TensorBoard's
profile plugin or Perfetto reads it; `benchmarks/profile_ops.py` sums it by op). Any --config.* override applies.

Variants side by side (this machine's speed drifts by up to 20% within an hour, so separate runs compare badly):

  python -m inception.benchmark --config=configs/googlenet.py --mode=eval --batch=32 --steps=3 --rounds=5 \
      --variant="xla:cpu_kernels=False" [--variant="NAME:key=value key=value" ...]

compiles the config as given (`base`) and each variant (its overrides applied, keys as after --config.) in one
process, then times them in alternating rounds and prints each one's median and its speed against base.

Several processes, each on its own cores (on 2 CPU cores, two processes ran the eval step 13% faster than one; see
docs/performance.md):

  python -m launch.local --module=inception.benchmark --num_processes=2 --pin_cores -- \
      --config=configs/googlenet.py --mode=eval --batch=32

`--distributed` joins them (the coordinator from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, or
found on TPU pods and SLURM); --batch stays the global batch, and every process prints the figures.
"""
import json
import statistics
import time

from absl import app, flags
from ml_collections import config_flags

from inception import command, config_checks, host_memory

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file, e.g. configs/googlenet.py:mini.')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'input'], 'What to time.')
_BATCH = flags.DEFINE_integer('batch', None, 'Global batch (default: the config\'s batch_size / eval_batch_size).')
_IMAGE_SIZE = flags.DEFINE_integer('image-size', None, 'Input side in pixels (default: config.pp.image_size).')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps (batches for --mode=input) after the warm-up ones.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation (batches for --mode=input).')
_DTYPE = flags.DEFINE_enum('dtype', None, ['float32', 'bfloat16'], 'Compute dtype (default: config.model.dtype).')
_DATA = flags.DEFINE_string('data', None, '--mode=input: an image folder to read instead of the config\'s data.')
_NUM_CLASSES = flags.DEFINE_integer('num-classes', 1000, 'train / eval: classifier outputs (no data is read).')
_JSON = flags.DEFINE_string('json', None, 'Also write the figures to this JSON file.')
_PROFILE = flags.DEFINE_string('profile', None, 'train / eval: write a jax.profiler trace of the timed steps here.')
_VARIANT = flags.DEFINE_multi_string(
    'variant', [], 'train / eval: also time the config with these overrides, side by side in alternating rounds: '
    '"NAME:key=value [key=value ...]" (keys as after --config.). Repeatable.')
_ROUNDS = flags.DEFINE_integer('rounds', 5, 'With --variant: alternating rounds of --steps steps per config.')
_DISTRIBUTED = flags.DEFINE_bool('distributed', False, 'Join a multi-process job (coordinator from the environment).')

# Dense peak FLOP/s per device by jax device_kind, for the share of peak (float32 / bfloat16; vendors' datasheets).
PEAK_FLOPS = {
    'NVIDIA H100 80GB HBM3': {'float32': 67e12, 'bfloat16': 989e12},
    'NVIDIA H200': {'float32': 67e12, 'bfloat16': 989e12},
    'NVIDIA A100-SXM4-80GB': {'float32': 19.5e12, 'bfloat16': 312e12},
    'NVIDIA A100-SXM4-40GB': {'float32': 19.5e12, 'bfloat16': 312e12},
    'TPU v4': {'bfloat16': 275e12},
    'TPU v5 lite': {'bfloat16': 197e12},
    'TPU v5': {'bfloat16': 459e12},
}


def _apply_flags(config):
  """The config with --batch, --image-size, --dtype and --data applied (they are shorthands for config keys)."""
  with config.unlocked():
    if _BATCH.value:
      config.batch_size = config.eval_batch_size = _BATCH.value
    if _IMAGE_SIZE.value:
      config.pp.image_size = _IMAGE_SIZE.value
    if _DTYPE.value:
      config.model.dtype = _DTYPE.value
    if _DATA.value:
      config.data.source, config.data.root = 'folder', _DATA.value
  return config


def _flops(compiled) -> float:
  """FLOPs of one call of a compiled program: XLA's cost analysis (0 when the backend gives none), plus the direct
  convolutions that Winograd kernel calls stand for (XLA counts a custom call as none)."""
  from inception.models import winograd  # pylint: disable=import-outside-toplevel  (after the restart)
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get('flops', 0.0)) + winograd.direct_flops(compiled.as_text())


def _time_steps(run, n: int) -> float:
  """Seconds per call of `run()` (which returns something to block on) over `n` calls."""
  import jax  # pylint: disable=import-outside-toplevel
  t0 = time.perf_counter()
  out = None
  for _ in range(n):
    out = run()
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / max(n, 1)


def compile_step(config, mode: str, num_classes: int):
  """The jitted train or eval step of `config`, compiled, with synthetic device-resident data: (run, info), where
  `run()` takes one step and returns something to block on, and `info` holds the figures known before timing."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from inception import compiler_options, models, optim, sharding, steps as steps_lib  # pylint: disable=import-outside-toplevel

  size = config.pp.image_size
  batch_size = config.batch_size if mode == 'train' else config.eval_batch_size
  models.check_model_config(config.model, size)
  t0 = time.perf_counter()
  model = models.build(config.model, num_classes=num_classes, image_size=size, rngs=nnx.Rngs(params=config.seed))
  schedule = optim.make_schedule(config, steps_per_epoch=100, total_steps=100 * max(1, int(config.num_epochs)))
  tx = optim.make_optimizer(config, schedule)
  model.train()
  train_graphdef, state = steps_lib.create_train_state(model, tx, config.seed)
  model.eval()
  eval_graphdef, _, _ = nnx.split(model, nnx.Param, ...)
  build_s = time.perf_counter() - t0

  mesh = sharding.make_mesh()
  sharding.check_batch_size(batch_size, mesh)
  repl, data = sharding.replicated(mesh), sharding.data_sharded(mesh)
  state = jax.device_put(state, repl)
  rng = np.random.RandomState(0)
  local = batch_size // jax.process_count()
  batch = sharding.to_global({
      'image': rng.randint(0, 256, (local, size, size, 3)).astype(np.uint8),
      'seed': rng.randint(0, 2**32, (local, 2)).astype(np.uint32),
      'label': rng.randint(0, num_classes, (local,)).astype(np.int32),
      'mask': np.ones((local,), np.float32)}, mesh)

  t0 = time.perf_counter()
  if mode == 'train':
    step = jax.jit(steps_lib.make_train_step(train_graphdef, tx, schedule, config), in_shardings=(repl, data),
                   out_shardings=(repl, repl), donate_argnums=0,
                   compiler_options=compiler_options.for_backend(config)).lower(state, batch).compile()
    holder = {'state': state}

    def run():
      holder['state'], metrics = step(holder['state'], batch)
      return metrics
  else:
    step = jax.jit(steps_lib.make_eval_step(eval_graphdef, config), in_shardings=(repl, repl, data),
                   out_shardings=repl, compiler_options=compiler_options.for_backend(config, inference=True)).lower(
                       state.params, state.model_state, batch).compile()
    run = lambda: step(state.params, state.model_state, batch)
  compile_s = time.perf_counter() - t0
  device = jax.devices()[0]
  return run, {
      'mode': mode, 'model': config.model.name, 'dtype': str(config.model.dtype), 'image_size': size,
      'batch': batch_size, 'devices': mesh.devices.size, 'processes': jax.process_count(), 'platform': device.platform,
      'device_kind': device.device_kind, 'build_s': build_s, 'compile_s': compile_s,
      'gflop_per_step': _flops(step) * mesh.devices.size / 1e9,  # XLA counts one device's share of the SPMD program
  }


def _with_speed(info: dict, seconds: float) -> dict:
  """`info` (compile_step's) with the figures of `seconds` per step."""
  peak = PEAK_FLOPS.get(info['device_kind'], {}).get(info['dtype'])
  achieved = info['gflop_per_step'] * 1e9 / seconds
  return {**info, 'ms_per_step': seconds * 1e3, 'images_per_s': info['batch'] / seconds,
          'tflop_per_s': achieved / 1e12, 'peak_share': achieved / (peak * info['devices']) if peak else None}


def benchmark_step(config, mode: str, num_classes: int, steps: int, warmup: int, profile_dir=None) -> dict:
  """Figures of the jitted train or eval step on synthetic device-resident data (see the module docstring);
  with `profile_dir`, the timed steps run under `jax.profiler.trace` (a Perfetto trace too), which costs a little."""
  import jax  # pylint: disable=import-outside-toplevel
  run, info = compile_step(config, mode, num_classes)
  _time_steps(run, warmup)
  if profile_dir:
    with jax.profiler.trace(profile_dir, create_perfetto_trace=True):
      seconds = _time_steps(run, steps)
  else:
    seconds = _time_steps(run, steps)
  return _with_speed(info, seconds)


def compare_steps(configs: dict, mode: str, num_classes: int, steps: int, warmup: int, rounds: int) -> dict:
  """Figures of several configs' steps compiled side by side in this process and timed in alternating rounds
  (forward order, then reversed), so that a machine whose speed drifts within the hour affects all alike: per
  config name, its figures at the median round and `round_ms`, every round's ms/step."""
  compiled = {name: compile_step(config, mode, num_classes) for name, config in configs.items()}
  for run, _ in compiled.values():
    _time_steps(run, warmup)
  round_ms = {name: [] for name in configs}
  names = list(configs)
  for r in range(rounds):
    for name in (names if r % 2 == 0 else names[::-1]):
      round_ms[name].append(_time_steps(compiled[name][0], steps) * 1e3)
  return {name: {**_with_speed(info, statistics.median(round_ms[name]) / 1e3),
                 'round_ms': round_ms[name]} for name, (_, info) in compiled.items()}


def benchmark_input(config, steps: int, warmup: int) -> dict:
  """Figures of the training input pipeline, transfer to the devices included (see the module docstring)."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from inception import sharding  # pylint: disable=import-outside-toplevel
  from inception.data import pipeline  # pylint: disable=import-outside-toplevel

  mesh = sharding.make_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  source = pipeline.build_source(config)
  batches = pipeline.train_batches(config, process_index=jax.process_index(), process_count=jax.process_count(),
                                   source=source)
  fetch = lambda: sharding.to_global({k: v for k, v in next(batches).items() if k != 'index'}, mesh)
  t0 = time.perf_counter()
  for _ in range(max(warmup, 1)):
    first = fetch()
  first_s = time.perf_counter() - t0
  seconds = _time_steps(fetch, steps)
  local = config.batch_size // jax.process_count()
  cores = pipeline.host_cores()
  images_per_s = local / seconds
  per_image = sum(np.dtype(x.dtype).itemsize * int(np.prod(x.shape[1:])) for x in first.values())
  return {
      'mode': 'input', 'source': config.data.source, 'root': config.data.root, 'image_size': config.pp.image_size,
      'batch': local, 'host_cores': cores, 'warmup_s': first_s, 'ms_per_batch': seconds * 1e3,
      'images_per_s': images_per_s, 'images_per_s_per_core': images_per_s / cores, 'bytes_per_image': per_image,
  }


def parse_variants(texts, config) -> dict:
  """The configs to compare, by name: `base` (`config` itself) and one per --variant text "NAME:key=value ...",
  `config` with those overrides (config_checks' rules: a ConfigError names an unknown key or a wrong type)."""
  configs = {'base': config}
  for text in texts:
    name, sep, rest = text.partition(':')
    pairs = [item.partition('=') for item in rest.split()]
    if not sep or not name or name in configs or not pairs or any(not eq or not key for key, eq, _ in pairs):
      raise config_checks.ConfigError(
          f'--variant={text!r}: expected "NAME:key=value [key=value ...]" with a new name (not {", ".join(configs)})'
          f' and at least one override, e.g. --variant="xla:cpu_kernels=False".')
    configs[name] = config_checks.apply_overrides(config, [(key, value) for key, _, value in pairs],
                                                  where=f'--variant {name}')
  return configs


def report_comparison(figures: dict, rounds: int, steps: int) -> str:
  """The printed lines of compare_steps' figures: one row per config with its speed against `base`; the last line
  is base's `images/s: X`."""
  base = figures['base']
  lines = [f'{base["mode"]} step, {base["model"]} {base["dtype"]} {base["image_size"]} px batch {base["batch"]} on '
           f'{base["devices"]} {base["platform"]} device(s) in {base["processes"]} process(es), {rounds} alternating '
           f'rounds of {steps} steps (median ms/step, speed against base, every round):']
  for name, f in figures.items():
    lines.append(f'  {name:12s} {f["ms_per_step"]:8.1f} ms/step {f["images_per_s"]:8.2f} images/s '
                 f'{base["ms_per_step"] / f["ms_per_step"]:6.3f}x  ' + ' '.join(f'{ms:.0f}' for ms in f['round_ms']))
  return '\n'.join(lines + _setting_lines(base) + [f'images/s: {base["images_per_s"]:.2f}'])


def _setting_lines(figures: dict) -> list:
  """The lines naming what computes the convolutions and pools (ops.describe) and the process's malloc and huge pages
  (host_memory.describe), where main recorded them."""
  return [figures[key] for key in ('convolutions', 'host_memory') if figures.get(key)]


def report(figures: dict) -> str:
  """The printed lines; the last one is `images/s: X`."""
  if figures['mode'] == 'input':
    lines = [f'input pipeline, {figures["source"]} {figures["root"]}, {figures["image_size"]} px, batch '
             f'{figures["batch"]} per process: first batch {figures["warmup_s"]:.1f} s, {figures["ms_per_batch"]:.0f}'
             f' ms/batch, {figures["images_per_s_per_core"]:.1f} images/s per host core ({figures["host_cores"]} '
             f'cores), {figures["bytes_per_image"]} bytes/image to the devices']
  else:
    share = f' ({100 * figures["peak_share"]:.1f}% of peak)' if figures['peak_share'] else ''
    lines = [f'{figures["mode"]} step, {figures["model"]} {figures["dtype"]} {figures["image_size"]} px batch '
             f'{figures["batch"]} on {figures["devices"]} {figures["platform"]} device(s) in {figures["processes"]} '
             f'process(es) ({figures["device_kind"]}): '
             f'build {figures["build_s"]:.1f} s, compile {figures["compile_s"]:.1f} s',
             f'{figures["ms_per_step"]:.0f} ms/step, {figures["gflop_per_step"]:.1f} GFLOP/step, '
             f'{figures["tflop_per_s"]:.3f} TFLOP/s{share}']
  return '\n'.join(lines + _setting_lines(figures) + [f'images/s: {figures["images_per_s"]:.2f}'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  if _VARIANT.value and (_MODE.value == 'input' or _PROFILE.value):
    raise app.UsageError('--variant compares train or eval steps without --profile: drop --variant, or use '
                         '--mode=train|eval without --profile.')
  config = _apply_flags(_CONFIG.value)
  if _DISTRIBUTED.value:  # a bad config, data or distributed setting: a UserError, one line (inception/command.py)
    from inception import distributed  # pylint: disable=import-outside-toplevel
    distributed.initialize()
  config_checks.check_config(config)
  if _MODE.value == 'input':
    figures = benchmark_input(config, _STEPS.value, _WARMUP.value)
  elif _VARIANT.value:
    configs = parse_variants(_VARIANT.value, config)
    for variant in list(configs.values())[1:]:  # base was checked above
      config_checks.check_config(variant)
    figures = compare_steps(configs, _MODE.value, _NUM_CLASSES.value, _STEPS.value, _WARMUP.value, _ROUNDS.value)
  else:
    figures = benchmark_step(config, _MODE.value, _NUM_CLASSES.value, _STEPS.value, _WARMUP.value, _PROFILE.value)
  import jax  # pylint: disable=import-outside-toplevel
  from inception.models import ops  # pylint: disable=import-outside-toplevel
  memory = host_memory.describe()  # the malloc moves CPU figures by 10-30%
  for one, one_config in ([(figures[name], configs[name]) for name in figures] if _VARIANT.value
                          else [(figures, config)]):
    one['host_memory'] = memory
    if _MODE.value != 'input':
      one['convolutions'] = ops.describe(ops.setting(one_config), jax.default_backend())
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump(figures, f, indent=2)
  if _VARIANT.value:
    print(report_comparison(figures, _ROUNDS.value, _STEPS.value), flush=True)
  else:
    print(report(figures), flush=True)


def run():
  """The command (inception/command.py): `--config.*` overrides checked first; --mode=input computes no step."""
  command.run(main, computes_steps=lambda: _MODE.value != 'input', check_config=True)


if __name__ == '__main__':
  run()

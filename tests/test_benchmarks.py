"""The benchmark commands (python -m inception.benchmark, alone or in core-pinned processes under launch.local,
benchmarks/resume.py, benchmarks/compare_pytorch.py) run and print their figures."""
import json
import os
import re
import subprocess
import sys

import pytest
from flax import nnx

from inception import host_memory, models
from inception.models import summary

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWO_DEVICES = {'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}  # quicker to compile than the tests' 4


@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_step_benchmark_prints_throughput_and_flops(mode, tmp_path):
  """The real steps (aux head in training) of the smoke-test network at 64 px; the figures add up, and the
  train steps' profile sums by op."""
  out, profile = tmp_path / 'figures.json', tmp_path / 'profile'
  proc = subprocess.run(
      [sys.executable, '-m', 'inception.benchmark', '--config=configs/googlenet.py:mini', f'--mode={mode}',
       '--config.model.name=inception_tiny', '--steps=2', '--warmup=1', '--batch=4', '--image-size=64',
       '--num-classes=10', f'--json={out}'] + ([f'--profile={profile}'] if mode == 'train' else []),
      cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, 'PYTHONPATH': REPO, **TWO_DEVICES})
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.strip().splitlines()
  assert lines[0].startswith(f'{mode} step, inception_tiny float32 64 px batch 4 on 2 cpu device(s)'), proc.stdout
  figures = json.loads(out.read_text())
  assert lines[-1] == f'images/s: {figures["images_per_s"]:.2f}' and figures['images_per_s'] > 0
  assert lines[-2] == figures['host_memory'] and lines[-2].startswith('host memory: '), proc.stdout
  assert lines[-3] == figures['convolutions'] and lines[-3].startswith('convolutions: '), proc.stdout
  assert abs(figures['images_per_s'] - 4000 / figures['ms_per_step']) < 1e-6 * figures['images_per_s']
  # XLA's count of the program against the model summary's multiply-adds (2 FLOPs each): measured 0.96x when
  # evaluating; when training about 3x for the model (the forward and two backward products, the aux head) plus the
  # on-device colour distortions (inception/augment.py): 2.96x in all.
  model = nnx.eval_shape(lambda: models.MODELS.get('inception_tiny')(num_classes=10, image_size=64,
                                                                     rngs=nnx.Rngs(params=0)))
  ratio = figures['gflop_per_step'] / 4 / (2e-9 * summary.summarize(model, 64)[1]['multiply_adds'])
  assert (2.5 < ratio < 5.0) if mode == 'train' else (0.8 < ratio < 1.2), figures
  if mode != 'train':
    return
  ops = subprocess.run([sys.executable, 'benchmarks/profile_ops.py', str(profile), '--steps=2', '--top=5'],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
  assert ops.returncode == 0, ops.stderr[-3000:]
  head, *rows = ops.stdout.strip().splitlines()
  assert ': ' in head and ' ms of ops per step' in head, ops.stdout
  per_step = float(re.search(r': ([0-9.]+) ms of ops per step', head).group(1))
  shares = [float(re.search(r'ms +([0-9.]+)%', row).group(1)) for row in rows]
  # Largest first, and the rows are parts of the total (an op nested in another is not counted twice).
  assert per_step > 0 and shares == sorted(shares, reverse=True) and sum(shares) <= 100.05, ops.stdout
  assert 1 <= len(rows) <= 5, ops.stdout


def test_step_benchmark_compares_variants_in_alternating_rounds(tmp_path):
  """--variant: the config as given (base) and a variant, compiled side by side and timed in alternating rounds;
  every round is reported, and the variant's override reaches its step (here: its batch)."""
  out = tmp_path / 'figures.json'
  proc = subprocess.run(
      [sys.executable, '-m', 'inception.benchmark', '--config=configs/googlenet.py:mini', '--mode=eval',
       '--config.model.name=inception_tiny', '--steps=1', '--warmup=1', '--rounds=3', '--batch=4', '--image-size=64',
       '--num-classes=10', '--variant=big:eval_batch_size=8 cpu_kernels=False', f'--json={out}'],
      cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, 'PYTHONPATH': REPO, **TWO_DEVICES})
  assert proc.returncode == 0, proc.stderr[-3000:]
  figures = json.loads(out.read_text())
  assert list(figures) == ['base', 'big'] and [figures[n]['batch'] for n in figures] == [4, 8], figures
  for f in figures.values():  # the median of 3 rounds
    assert len(f['round_ms']) == 3 and f['ms_per_step'] == pytest.approx(sorted(f['round_ms'])[1]), figures
  head, *rows, last = proc.stdout.strip().splitlines()
  assert head.startswith('eval step, inception_tiny float32 64 px batch 4 on 2 cpu device(s) in 1 process(es), 3 '
                         'alternating rounds of 1 steps'), proc.stdout
  assert [row.split()[0] for row in rows[:2]] == ['base', 'big'] and ' 1.000x ' in rows[0], proc.stdout
  assert rows[2:] == [figures['base']['convolutions'], figures['base']['host_memory']], proc.stdout
  assert rows[2].startswith('convolutions: ') and rows[3].startswith('host memory: '), proc.stdout
  assert last == f'images/s: {figures["base"]["images_per_s"]:.2f}'


@pytest.mark.parametrize('text, problem', [('big', 'expected "NAME:key=value'), ('base:seed=1', 'a new name'),
                                           ('x:seed', 'expected "NAME:key=value'), ('x:', 'at least one override'),
                                           ('x:no_such_key=1', "unknown key 'no_such_key'"),
                                           ('x:seed=many', 'expected a value of type int')])
def test_bad_variants_are_named(text, problem):
  from inception import benchmark, config_checks  # pylint: disable=import-outside-toplevel
  with pytest.raises(config_checks.ConfigError, match=re.escape(problem)):
    benchmark.parse_variants([text], config_checks.load_config('configs/googlenet.py:mini'))


def test_variants_of_the_input_pipeline_are_refused():
  proc = subprocess.run([sys.executable, '-m', 'inception.benchmark', '--config=configs/googlenet.py:mini',
                         '--mode=input', '--variant=a:seed=1'], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1 and '--variant compares train or eval steps' in proc.stderr, proc.stderr[-2000:]


def test_variants_override_a_copy_of_the_config():
  from inception import benchmark, config_checks  # pylint: disable=import-outside-toplevel
  config = config_checks.load_config('configs/googlenet.py:mini')
  configs = benchmark.parse_variants(['lr:optimizer.lr=0.5 seed=3'], config)
  assert configs['base'] is config and (config.optimizer.lr, config.seed) != (0.5, 3)
  assert (configs['lr'].optimizer.lr, configs['lr'].seed) == (0.5, 3)


def _trace(path, threads, spans):
  """A minimal Perfetto trace: thread names by tid, and (tid, start us, duration us, name) op spans."""
  import gzip  # pylint: disable=import-outside-toplevel
  events = [{'ph': 'M', 'name': 'thread_name', 'tid': tid, 'args': {'name': name}} for tid, name in threads.items()]
  events += [{'ph': 'X', 'tid': tid, 'ts': ts, 'dur': dur, 'name': name} for tid, ts, dur, name in spans]
  with gzip.open(path, 'wt') as f:
    json.dump({'traceEvents': events}, f)


def test_profile_ops_sums_the_workers_or_on_one_core_the_clients_thread(tmp_path):
  sys.path.insert(0, os.path.join(REPO, 'benchmarks'))
  try:
    import profile_ops  # pylint: disable=import-outside-toplevel
  finally:
    sys.path.pop(0)
  threads = {1: 'tf_XLAPjRtCpuClient/1', 2: 'tf_XLAEigen/2', 3: 'tf_XLAEigen/3', 4: 'python'}
  _trace(tmp_path / 'two.json.gz', threads, [
      (1, 0, 900, 'ThunkExecutor::Execute (wait for completion)'), (2, 10, 100, 'dot.1'), (3, 10, 50, 'dot.2'),
      (2, 200, 30, 'pad_fusion.3'), (2, 205, 5, 'nested.1'), (4, 0, 999, 'python span')])
  totals, where = profile_ops.op_times(str(tmp_path / 'two.json.gz'))
  assert totals == {'dot': 150, 'pad_fusion': 30} and where == 'summed over worker threads'
  one_core = {1: 'tf_XLAPjRtCpuClient/1', 4: 'python'}
  _trace(tmp_path / 'one.json.gz', one_core, [
      (1, 0, 900, 'ThunkExecutor::Execute (wait for completion)'), (1, 10, 100, 'conv_general_dilated.4'),
      (1, 120, 40, 'dot.1'), (4, 0, 999, 'python span')])
  totals, where = profile_ops.op_times(str(tmp_path / 'one.json.gz'))
  assert totals == {'conv_general_dilated': 100, 'dot': 40} and 'one core' in where


TWO_CORES = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason='--pin_cores needs a core per process')


@TWO_CORES
def test_step_benchmark_runs_in_two_pinned_processes(tmp_path):
  """launch.local --module=inception.benchmark --pin_cores: one job over both processes' devices, each process on
  its own core, each printing the job's figures."""
  proc = subprocess.run(
      [sys.executable, '-m', 'launch.local', '--module=inception.benchmark', '--num_processes=2', '--pin_cores', '--',
       '--config=configs/googlenet.py:mini', '--mode=eval', '--config.model.name=inception_tiny', '--steps=2',
       '--warmup=1', '--batch=4', '--image-size=64', '--num-classes=10', f'--config.workdir={tmp_path}'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  head = 'eval step, inception_tiny float32 64 px batch 4 on 2 cpu device(s) in 2 process(es)'
  for out in (proc.stdout, (tmp_path / 'logs' / 'process_1.log').read_text()):
    assert head in out and re.search(r'^images/s: [0-9.]+$', out, re.M), out[-3000:]


def test_input_benchmark_reads_the_training_pipeline(small_images, tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'inception.benchmark', '--config=configs/googlenet.py:mini', '--mode=input',
       f'--data={small_images}', '--steps=2', '--warmup=1', '--batch=4', '--image-size=32'],
      cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, 'PYTHONPATH': REPO})
  assert proc.returncode == 0, proc.stderr[-3000:]
  first, memory, last = proc.stdout.strip().splitlines()
  assert memory.startswith('host memory: ') and ' malloc, glibc.malloc.hugetlb=' in memory, proc.stdout
  assert first.startswith(f'input pipeline, folder {small_images}, 32 px, batch 4 per process') and \
      f'{32 * 32 * 3 + 4 + 8 + 4} bytes/image' in first, proc.stdout  # uint8 image, int32 label, 2 uint32 seeds,
  # float32 mask
  assert float(last.split('images/s: ')[1]) > 0


def test_resume_benchmark_prints_the_time_to_the_first_batch():
  proc = subprocess.run(
      [sys.executable, 'benchmarks/resume.py', '--num_examples=5000', '--steps=0,100000', '--batch_size=16'],
      cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, 'PYTHONPATH': REPO})
  assert proc.returncode == 0, proc.stderr[-3000:]
  found = re.findall(r'resume at step +(\d+) \(epoch +([0-9.]+)\): first batch \(16, 112, 112, 3\) in +([0-9.]+) s',
                     proc.stdout)
  assert [(int(s), float(e)) for s, e, _ in found] == [(0, 0.0), (100000, 320.0)], proc.stdout


FAKE_REFERENCE = ('#!/bin/sh\necho "${GLIBC_TUNABLES:-unset} ${LD_PRELOAD:-unset}" >> "$FAKE_LOG"\n'
                  'echo "images/s: 2.0"\n')


@pytest.mark.parametrize('torch_env', ['same', 'default'])
def test_the_pytorch_comparison_gives_both_sides_the_same_environment(torch_env, tmp_path):
  """benchmarks/compare_pytorch.py with a stand-in for PyTorch's interpreter (it logs the GLIBC_TUNABLES and
  LD_PRELOAD it got and prints a rate): the reference runs get the malloc and huge pages this project restarts with,
  unless told otherwise."""
  fake = tmp_path / 'python'
  fake.write_text(FAKE_REFERENCE)
  fake.chmod(0o755)
  log = tmp_path / 'env.log'
  env = {k: v for k, v in os.environ.items() if k not in ('GLIBC_TUNABLES', 'LD_PRELOAD', 'INCEPTION_MALLOC')}
  proc = subprocess.run(
      [sys.executable, 'benchmarks/compare_pytorch.py', f'--torch-python={fake}', '--modes=eval', '--rounds=1',
       '--batch=2', '--image-size=96', '--eval-steps=1', f'--torch-env={torch_env}'],
      cwd=REPO, capture_output=True, text=True, timeout=600, env={**env, 'FAKE_LOG': str(log), **TWO_DEVICES})
  assert proc.returncode == 0, proc.stderr[-3000:]
  ours = float(re.search(r'^eval: inception ([0-9.]+) images/s, pytorch 2.00 images/s', proc.stdout, re.M).group(1))
  assert ours > 0
  settings = host_memory.restart_settings(env) if torch_env == 'same' else {}
  assert log.read_text().split() == [settings.get('GLIBC_TUNABLES', 'unset'), settings.get('LD_PRELOAD', 'unset')]


@pytest.mark.slow
@TWO_CORES
def test_the_pytorch_comparison_in_two_processes_sums_the_reference_copies(tmp_path):
  """--processes=2: this project as one 2-process job, the reference as 2 pinned copies at once, their rates summed."""
  fake = tmp_path / 'python'
  fake.write_text(FAKE_REFERENCE)
  fake.chmod(0o755)
  proc = subprocess.run(
      [sys.executable, 'benchmarks/compare_pytorch.py', f'--torch-python={fake}', '--modes=eval', '--rounds=1',
       '--batch=2', '--image-size=96', '--eval-steps=1', '--processes=2'],
      cwd=REPO, capture_output=True, text=True, timeout=600,
      env={**os.environ, 'FAKE_LOG': str(tmp_path / 'env.log'), **TWO_DEVICES})
  assert proc.returncode == 0, proc.stderr[-3000:]
  ours = re.search(r'^eval: inception, 2 processes ([0-9.]+) images/s, pytorch, 2 processes 4.00 images/s, ratio',
                   proc.stdout, re.M)
  assert ours and float(ours.group(1)) > 0, proc.stdout
  assert len((tmp_path / 'env.log').read_text().splitlines()) == 3  # one single run, two copies

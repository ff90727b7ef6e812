"""launch.sweep: axes, runs, names, commands, validation, CSV and table; a real (tiny) sweep, killed and resumed."""
import csv
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from etils import epath

from inception import errors
from launch import sweep
from tests.services.gcs import gcs, gcs_emulator  # noqa: F401  pylint: disable=unused-import  (fixtures)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC = 'configs/googlenet.py:mini'
MINI = os.path.join(REPO, 'data', 'caltech101-mini')


def test_values_are_literals_else_strings():
  axis = sweep.parse_axis("pp.train.area_range=(0.08, 1.0),(0.2,1.0)")
  assert axis == sweep.Axis('pp.train.area_range', ((0.08, 1.0), (0.2, 1.0)), None)
  assert sweep.parse_axis("model.dtype=float32,'bfloat16',\"a,b\"").values == ('float32', 'bfloat16', 'a,b')
  assert sweep.parse_axis('model.aux_heads=True,False').values == (True, False)
  assert sweep.parse_axis('config.num_epochs=1,2').key == 'num_epochs'
  for bad in ('optimizer.lr', 'optimizer.lr=', 'optimizer.lr=uniform(1)', 'optimizer.lr=loguniform(0,1)'):
    with pytest.raises(sweep.SweepError):
      sweep.parse_axis(bad)


def test_grid_is_the_cartesian_product_first_axis_outermost():
  runs = sweep.expand_runs([sweep.parse_axis('optimizer.lr=0.01,0.05'),
                            sweep.parse_axis('optimizer.weight_decay=1e-4,5e-5'), sweep.parse_axis('seed=0')])
  assert [tuple(r.values()) for r in runs] == [(0.01, 1e-4, 0), (0.01, 5e-5, 0), (0.05, 1e-4, 0), (0.05, 5e-5, 0)]
  assert all(list(r) == ['optimizer.lr', 'optimizer.weight_decay', 'seed'] for r in runs)
  # A repeated value is one run.
  assert len(sweep.expand_runs([sweep.parse_axis('seed=0,0,1')])) == 2


def test_random_draws_are_reproducible_in_range_and_crossed_with_the_grid():
  axes = [sweep.parse_axis(s) for s in ('optimizer.lr=loguniform(1e-3,1e-1)', 'seed=0,1',
                                         'optimizer.momentum=uniform(0.8,0.95)', 'model.dtype=choice("a","b")')]
  runs = sweep.expand_runs(axes, num_random=5, seed=0)
  assert runs == sweep.expand_runs(axes, num_random=5, seed=0)
  assert runs != sweep.expand_runs(axes, num_random=5, seed=1)
  assert len(runs) == 10 and [r['seed'] for r in runs] == [0, 1] * 5
  assert [r['optimizer.lr'] for r in runs[::2]] == [r['optimizer.lr'] for r in runs[1::2]]  # one draw, both seeds
  assert len({r['optimizer.lr'] for r in runs}) == 5
  assert all(1e-3 <= r['optimizer.lr'] <= 1e-1 and 0.8 <= r['optimizer.momentum'] <= 0.95 for r in runs)
  assert {r['model.dtype'] for r in runs} <= {'a', 'b'}
  with pytest.raises(sweep.SweepError, match='need --random'):
    sweep.expand_runs(axes)
  with pytest.raises(sweep.SweepError, match='needs a random axis'):
    sweep.expand_runs([sweep.parse_axis('seed=0,1')], num_random=3)


def test_names_are_stable_unique_and_safe():
  assert sweep.run_name({'optimizer.lr': 0.01, 'optimizer.weight_decay': 1e-4}) == 'lr=0.01,weight_decay=0.0001'
  assert sweep.run_name({'optimizer.weight_decay': 1e-4, 'optimizer.lr': 0.01}) == 'lr=0.01,weight_decay=0.0001'
  assert sweep.run_name({'a.rate': 1, 'b.rate': 2}) == 'a.rate=1,b.rate=2'  # ambiguous short keys: full keys
  assert sweep.run_name({'pp.train.area_range': (0.08, 1.0)}) == 'area_range=0.08_1.0'
  assert sweep.run_name({}) == 'default'
  odd = [{'data.root': '/data/x y'}, {'data.root': '/data/x_y'}, {'data.root': 'a,b=c'}, {'data.root': 'a', 'b': 'c'}]
  names = [sweep.run_name(r) for r in odd]
  assert len(set(names)) == len(names)
  assert all(re.fullmatch(r'[A-Za-z0-9._=,+-]+', n) for n in names), names
  assert names[0] == sweep.run_name({'data.root': '/data/x y'})
  grid = sweep.expand_runs([sweep.parse_axis('optimizer.lr=0.1,0.10000001,1e-5'), sweep.parse_axis('seed=0,1,2')])
  assert len({sweep.run_name(r) for r in grid}) == 9


def test_dry_run_prints_the_exact_commands_and_writes_nothing(tmp_path, capsys, monkeypatch):
  monkeypatch.chdir(REPO)
  root = str(tmp_path / 'sweep')
  code = sweep.main([f'--config={SPEC}', f'--root={root}', '--sweep=optimizer.lr=0.01,0.05', '--sweep=seed=0',
                     '--dry_run', '--', '--config.num_epochs=2'])
  out = capsys.readouterr().out
  assert code == 0
  assert out.splitlines() == [shlex.join(
      [sys.executable, '-m', 'inception.main', f'--config={SPEC}', f'--config.workdir={root}/lr={lr},seed=0',
       f'--config.optimizer.lr={lr}', '--config.seed=0', '--config.num_epochs=2']) for lr in ('0.01', '0.05')]
  assert not os.path.exists(root)


def test_the_config_files_sweep_gives_the_runs(tmp_path, capsys, monkeypatch):
  monkeypatch.chdir(REPO)
  assert sweep.main([f'--config={SPEC}', f'--root={tmp_path}', '--dry_run']) == 0
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 4 and all('--config.optimizer.lr=' in l and '--config.optimizer.weight_decay=' in l
                                 for l in lines)
  with pytest.raises(errors.UserError, match="variants with a sweep: 'mini'"):  # the command prints it as one line
    sweep.main(['--config=configs/googlenet.py:caltech101', f'--root={tmp_path}', '--dry_run'])


def test_an_unknown_key_fails_before_anything_runs(tmp_path):
  root = tmp_path / 'sweep'
  for args in (['--sweep=optimizer.lrr=0.01,0.05'], ['--sweep=optimizer.lr=0.01', '--', '--config.num_epoch=1'],
               ['--sweep=num_epochs=1,two']):
    proc = subprocess.run([sys.executable, '-m', 'launch.sweep', f'--config={SPEC}', f'--root={root}', *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and proc.stdout == ''
    assert 'ConfigError:' in proc.stderr and ("unknown key 'optimizer.lrr'" in proc.stderr or
                                               "'num_epoch'" in proc.stderr or 'type float' in proc.stderr)
  assert not root.exists()


def test_runs_start_in_the_sweeps_directory(tmp_path, monkeypatch):
  """Paths on the command line (the config, --root, ARGS) mean what they mean where the sweep was started."""
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(sweep, 'build_command', lambda spec, root, run, extra=(): [
      sys.executable, '-c', 'import os; print(os.getcwd()); print(os.environ["PYTHONPATH"])'])
  proc = sweep.start_run(SPEC, 'sweep', {'seed': 0}, [], sorted(os.sched_getaffinity(0)))
  assert proc.wait(timeout=60) == 0
  cwd, path = (tmp_path / 'sweep' / 'seed=0' / 'sweep.log').read_text().splitlines()
  assert cwd == str(tmp_path) and path.split(os.pathsep)[0] == REPO  # the config files import `configs`


def test_cores_are_split_disjointly():
  cores = sorted(os.sched_getaffinity(0))
  parts = sweep.core_sets(len(cores))
  assert sorted(c for p in parts for c in p) == cores and all(len(p) == 1 for p in parts)
  assert sweep.core_sets(1) == [cores]
  with pytest.raises(sweep.SweepError):
    sweep.core_sets(len(cores) + 1)


def fake_run(root, run, final=None, steps=(), status=None):
  """A run folder as inception.main and the sweep leave it."""
  workdir = os.path.join(root, sweep.run_name(run))
  os.makedirs(workdir, exist_ok=True)
  if final is not None:
    ema, raw = final
    with open(os.path.join(workdir, 'final_eval.json'), 'w') as f:
      json.dump({'eval/top1': raw, 'eval/top5': 1.0, 'eval_ema/top1': ema, 'eval_ema/top5': 0.9,
                 'eval/examples': 7.0}, f)
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    f.writelines(json.dumps({'step': s, 'train/loss': 1.0}) + '\n' for s in steps)
    f.write('{"step": 99, "trunc')  # a line cut short by a kill
  if status is not None:
    with open(os.path.join(workdir, sweep.STATUS), 'w') as f:
      json.dump(status, f)


def test_csv_and_table_from_run_folders(tmp_path):
  runs = [{'optimizer.lr': lr, 'optimizer.weight_decay': wd} for lr in (0.01, 0.05) for wd in (1e-4, 5e-5)]
  fake_run(tmp_path, runs[0], final=(0.5, 0.45), steps=(1, 3, 2), status={'status': 'done', 'wall_s': 12.34})
  fake_run(tmp_path, runs[1], final=(0.75, 0.7), steps=(1, 2, 3), status={'status': 'done', 'wall_s': 20})
  fake_run(tmp_path, runs[2], steps=(1,), status={'status': 'failed', 'wall_s': 3, 'error': 'ValueError: boom'})
  rows = [sweep.read_result(str(tmp_path), r) for r in runs]
  sweep.write_csv(str(tmp_path / 'sweep.csv'), runs, rows)
  with open(tmp_path / 'sweep.csv') as f:
    table = list(csv.DictReader(f))
  assert list(table[0]) == ['name', 'optimizer.lr', 'optimizer.weight_decay', 'status', 'ema_top1', 'ema_top5',
                            'raw_top1', 'raw_top5', 'steps', 'wall_s', 'error']
  assert [r['name'] for r in table] == [sweep.run_name(r) for r in runs]
  assert [r['status'] for r in table] == ['done', 'done', 'failed', 'pending']
  assert table[0] == {'name': 'lr=0.01,weight_decay=0.0001', 'optimizer.lr': '0.01',
                           'optimizer.weight_decay': '0.0001', 'status': 'done', 'ema_top1': '0.5', 'ema_top5': '0.9',
                           'raw_top1': '0.45', 'raw_top5': '1.0', 'steps': '3', 'wall_s': '12.3', 'error': ''}
  assert (table[2]['error'], table[2]['steps'], table[2]['ema_top1']) == ('ValueError: boom', '1', '')
  assert (table[3]['steps'], table[3]['wall_s']) == ('', '')
  lines = sweep.format_table(runs, rows).splitlines()
  assert lines[0].split() == ['name', 'lr', 'weight_decay', 'status', 'ema_top1', 'ema_top5', 'raw_top1', 'raw_top5',
                              'steps', 'wall_s', 'error']
  assert [l.split()[0] for l in lines[1:]] == [sweep.run_name(runs[i]) for i in (1, 0, 2, 3)]  # best EMA first
  assert lines[1].split()[3:10] == ['done', '0.7500', '0.9000', '0.7000', '1.0000', '3', '20']
  assert lines[3].endswith('ValueError: boom')
  column = lines[0].index('status')  # aligned: every row's status starts under the header's
  assert [l[column:].split()[0] for l in lines] == ['status', 'done', 'done', 'failed', 'pending']


def test_seed_mean_and_spread(tmp_path):
  runs = [{'optimizer.lr': lr, 'seed': s} for lr in (0.01, 0.05) for s in (0, 1, 2)]
  for run, ema in zip(runs, (0.5, 0.6, 0.7, 0.8, 0.8)):
    fake_run(tmp_path, run, final=(ema, ema - 0.1))
  rows = [sweep.read_result(str(tmp_path), r) for r in runs]
  stats = sweep.seed_stats(runs, rows)
  assert [s['optimizer.lr'] for s in stats] == ['0.05', '0.01']  # best mean first
  assert stats[0]['seeds'] == '2/3' and stats[1]['seeds'] == '3/3'
  assert stats[1]['ema_top1_mean'] == pytest.approx(0.6) and stats[1]['ema_top1_std'] == pytest.approx(0.1)
  assert (stats[1]['ema_top1_min'], stats[1]['ema_top1_max']) == (0.5, 0.7)
  assert stats[1]['raw_top1_mean'] == pytest.approx(0.5) and stats[0]['ema_top1_std'] == 0.0
  text = sweep.format_seed_stats(stats)
  assert 'ema_top1_mean' in text and '0.5000-0.7000' in text and '0.4000-0.6000' in text


FAKE_MAIN = """
import json, os, sys
workdir, lr, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
print('cores', sorted(os.sched_getaffinity(0)))
if lr > 1:
  sys.exit('ValueError: lr too large')
with open(os.path.join(workdir, 'metrics.jsonl'), 'a') as f:
  f.write(json.dumps({'step': 5}) + '\\n')
top1 = 0.5 + lr + seed / 100
with open(os.path.join(workdir, 'final_eval.json'), 'w') as f:
  json.dump({'eval/top1': top1 - 0.1, 'eval/top5': 1.0, 'eval_ema/top1': top1, 'eval_ema/top5': 1.0}, f)
"""


def test_execute_runs_skips_and_reports_failures(tmp_path, monkeypatch, capsys):
  """The run loop with a stand-in for inception.main: two at a time on disjoint cores, a failure does not stop the
  others, the exit code says it failed; a second call skips what is done and retries the failure."""
  monkeypatch.setattr(sweep, 'build_command', lambda spec, root, run, extra=(): [
      sys.executable, '-c', FAKE_MAIN, os.path.join(root, sweep.run_name(run)), str(run['optimizer.lr']),
      str(run['seed'])])
  runs = sweep.expand_runs([sweep.parse_axis('optimizer.lr=0.1,2.0,0.2'), sweep.parse_axis('seed=0,1')])
  root = str(tmp_path)
  parallel = min(2, len(os.sched_getaffinity(0)))
  assert sweep.execute(SPEC, root, runs, [], parallel) == 1
  out = capsys.readouterr().out
  with open(tmp_path / 'sweep.csv') as f:
    table = list(csv.DictReader(f))
  assert [r['status'] for r in table] == ['done', 'done', 'failed', 'failed', 'done', 'done']
  assert table[2]['error'] == 'ValueError: lr too large' and table[0]['steps'] == '5'
  assert json.load(open(tmp_path / table[0]['name'] / 'overrides.json')) == {'optimizer.lr': 0.1, 'seed': 0}
  cores = {open(tmp_path / r['name'] / 'sweep.log').readline() for r in table}
  assert len(cores) == parallel  # each child on its own share of the cores
  lines = out.splitlines()
  assert lines[1].startswith('lr=0.2,seed=1') and lines[5].split()[3] == 'failed'
  assert 'Over seeds' in out and '0.7000-0.7100' in out and '0.0071' in out  # lr=0.2: mean 0.705, std 0.00707
  mtime = os.stat(tmp_path / table[0]['name'] / 'sweep.log').st_mtime_ns
  assert sweep.execute(SPEC, root, runs, [], 1) == 1
  assert os.stat(tmp_path / table[0]['name'] / 'sweep.log').st_mtime_ns == mtime
  assert open(tmp_path / table[2]['name'] / 'sweep.log').read().count('lr too large') == 2


# FAKE_MAIN for a run whose workdir is on gs://: it writes through the path library, as inception.main does.
FAKE_MAIN_GS = """
import json, sys
from etils import epath
workdir, lr, seed = epath.Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
if lr > 1:
  sys.exit('ValueError: lr too large')
(workdir / 'metrics.jsonl').write_text(json.dumps({'step': 5}) + '\\n')
top1 = 0.5 + lr + seed / 100
(workdir / 'final_eval.json').write_text(json.dumps(
    {'eval/top1': top1 - 0.1, 'eval/top5': 1.0, 'eval_ema/top1': top1, 'eval_ema/top5': 1.0}))
"""


def test_a_gs_root_keeps_the_sweeps_files_there(tmp_path, monkeypatch, capsys, gcs):
  """ROOT on gs:// (the Cloud Storage emulator, tests/services/gcs.py): the overrides, status files, sweep.csv and
  each run's sweep.log land in the bucket; a failure's last line is read from its log; a second call skips what is
  done and the retried run's log keeps its first attempt."""
  root = f'{gcs}/sweep'
  monkeypatch.setattr(sweep, 'build_command', lambda spec, root, run, extra=(): [
      sys.executable, '-c', FAKE_MAIN_GS, f'{root}/{sweep.run_name(run)}', str(run['optimizer.lr']),
      str(run['seed'])])
  monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path / 'tmp'))  # where the runs' logs are written as they run
  runs = sweep.expand_runs([sweep.parse_axis('optimizer.lr=0.1,2.0'), sweep.parse_axis('seed=0')])
  assert sweep.execute(SPEC, root, runs, [], 1) == 1
  assert sweep.execute(SPEC, root, runs, [], 1) == 1
  capsys.readouterr()
  table = list(csv.DictReader(io.StringIO(epath.Path(root, 'sweep.csv').read_text())))
  assert [r['status'] for r in table] == ['done', 'failed'] and table[1]['error'] == 'ValueError: lr too large'
  done, failed = (epath.Path(root, r['name']) for r in table)
  assert json.loads((done / 'overrides.json').read_text()) == {'optimizer.lr': 0.1, 'seed': 0}
  assert json.loads((done / sweep.STATUS).read_text())['status'] == 'done'
  assert (failed / 'sweep.log').read_text().count('lr too large') == 2
  assert not os.path.exists('gs:')  # nothing went to a local folder named after the URL


@pytest.fixture
def small_folder(tmp_path):
  """Two real classes, 8 images each, from the embedded data (~9 train / ~7 eval images)."""
  root = tmp_path / 'images'
  for cls in ('Faces_easy', 'Motorbikes'):
    os.makedirs(root / cls)
    for name in sorted(os.listdir(os.path.join(MINI, cls)))[:8]:
      shutil.copy(os.path.join(MINI, cls, name), root / cls / name)
  return str(root)


def wait_for(predicate, proc, timeout):
  deadline = time.time() + timeout
  while not predicate():
    assert proc.poll() is None and time.time() < deadline, 'the sweep ended before the run got there'
    time.sleep(0.1)


@pytest.mark.slow
def test_a_real_sweep_killed_and_resumed(small_folder, tmp_path):
  """2x2 over learning rate and weight decay, two runs at a time, killed (SIGTERM) while runs 3-4 train, then resumed.

  The values differ in float64 but round to the same float32 (the optimizer bakes them into the program as float32
  constants), so every run reuses one compiled train step from the JAX cache (JAX_COMPILATION_CACHE_DIR, inherited).
  The runs train the smoke-test network (models/tiny.py), 32 steps with a checkpoint at each: enough that runs 3-4
  are still training when the signal reaches them.
  """
  root = tmp_path / 'sweep'
  command = [sys.executable, '-m', 'launch.sweep', f'--config={SPEC}', f'--root={root}',
             '--sweep=optimizer.lr=0.01,0.010000000001', '--sweep=optimizer.weight_decay=5e-5,5.0000000001e-5',
             '--parallel=2', '--', f'--config.data.root={small_folder}', '--config.data.val_fraction=0.25',
             '--config.model.name=inception_tiny', '--config.pp.image_size=64', '--config.batch_size=4',
             '--config.eval_batch_size=4', '--config.num_epochs=16', '--config.eval_every_epochs=100', '--config.log_every_steps=1',
             '--config.checkpoint_every_steps=1']
  assert os.environ.get('JAX_COMPILATION_CACHE_DIR')  # tests/conftest.py; the runs inherit it
  names = [f'lr={lr},weight_decay={wd}' for lr in ('0.01', '0.010000000001') for wd in ('5e-05', '5.0000000001e-05')]
  workdirs = [root / n for n in names]

  # One CPU device per run (conftest asks for 4): quicker to start and to checkpoint; the rest of the environment,
  # JAX_COMPILATION_CACHE_DIR included, passes through the sweep to its runs.
  env = dict(os.environ, XLA_FLAGS=' '.join(f for f in os.environ.get('XLA_FLAGS', '').split()
                                            if not f.startswith('--xla_force_host_platform_device_count')))
  first = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  checkpointed = lambda w: os.path.isdir(w / 'checkpoints') and any(n.isdigit() for n in os.listdir(w / 'checkpoints'))
  wait_for(lambda: checkpointed(workdirs[2]) and checkpointed(workdirs[3]), first, timeout=400)
  first.send_signal(signal.SIGTERM)
  out, err = first.communicate(timeout=120)
  assert first.returncode == 128 + signal.SIGTERM, err[-3000:]
  with open(root / 'sweep.csv') as f:
    table = list(csv.DictReader(f))
  # Runs 3-4, both a step or so into their 32 when the signal comes, save a checkpoint at their next step and stop
  # (exit 75): pending. One that got past its last step all the same (the steps are short) ended normally: done.
  statuses = [r['status'] for r in table]
  assert statuses[:2] == ['done', 'done'] and 'pending' in statuses[2:], (statuses, err[-3000:])
  for w, status in zip(workdirs[2:], statuses[2:]):
    assert status in ('done', 'pending')
    if status == 'pending':
      assert json.load(open(w / sweep.STATUS))['status'] == 'interrupted'
      assert not os.path.exists(w / 'final_eval.json')
  assert json.load(open(workdirs[0] / 'overrides.json')) == {'optimizer.lr': 0.01, 'optimizer.weight_decay': 5e-5}
  before = {w: (os.stat(w / 'sweep.log').st_mtime_ns, json.load(open(w / sweep.STATUS))) for w in workdirs[:2]}
  to_resume = [w for w, status in zip(workdirs[2:], statuses[2:]) if status == 'pending']

  second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
  assert second.returncode == 0, second.stderr[-3000:]
  with open(root / 'sweep.csv') as f:
    table = list(csv.DictReader(f))
  assert [r['name'] for r in table] == names
  assert all(r['status'] == 'done' and r['error'] == '' for r in table)
  for r in table:
    assert all(0.0 <= float(r[c]) <= 1.0 for c in ('ema_top1', 'ema_top5', 'raw_top1', 'raw_top5'))
    assert int(r['steps']) >= 2 and float(r['wall_s']) > 0
  for w in workdirs[:2]:  # skipped: log and wall time untouched
    assert (os.stat(w / 'sweep.log').st_mtime_ns, json.load(open(w / sweep.STATUS))) == before[w]
    assert 'done before, skipped' in second.stderr
  for w in to_resume:  # interrupted runs went on from their checkpoints
    assert 'Resumed from step' in open(w / 'sweep.log').read()
  printed = second.stdout.splitlines()
  assert printed[0].split()[:4] == ['name', 'lr', 'weight_decay', 'status']
  assert sorted(l.split()[0] for l in printed[1:]) == sorted(names) and len(printed) == 5

"""Multi-crop evaluation and ensembles: the crop stream, the per-image averages, the loop's multi-crop evaluator and
the `inception.evaluate` command (1, 10 and 144 crops, a 2-model ensemble, the Table-3 report) on a finished run.

The crop geometry itself: tests/data/test_crops.py.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import types

import jax
import ml_collections
import numpy as np
import pytest
from etils import epath

from inception import sharding, trained
from inception.data import crop_batches
from inception.data.sources import build_source
from inception.evaluators import classification, multicrop as multicrop_eval
from tests.services.gcs import gcs, gcs_emulator, upload  # noqa: F401  pylint: disable=unused-import  (fixtures)
from tests.runs import REPO


def test_crop_batches_carry_every_image_k_times_over_the_processes(finished_run):
  """Two processes, 10 crops, 4 crops per local batch: the same number of batches on both, every eval image's crops
  exactly 10 times with its own label, padding masked."""
  _, config, _ = finished_run
  config = ml_collections.ConfigDict(config.to_dict())
  config.eval_batch_size = 8
  source = build_source(config)
  labels = dict(enumerate(label for _, label in source.files('eval')))
  parts = [list(crop_batches.MultiCropBatches(config, 10, process_index=p, process_count=2, source=source))
           for p in range(2)]
  assert len(parts[0]) == len(parts[1]) == crop_batches.MultiCropBatches(
      config, 10, process_index=0, process_count=2, source=source).num_batches
  seen = {}
  for batches in parts:
    for batch in batches:
      assert batch['image'].shape == (4, 96, 96, 3) and batch['image'].dtype == np.uint8
      for example, label, mask in zip(batch['example'], batch['label'], batch['mask']):
        if mask:
          seen[example] = seen.get(example, 0) + 1
          assert label == labels[example]
        else:
          assert example == -1
  assert seen == {i: 10 for i in labels}


def test_crop_averages_average_per_image_and_score_the_averages():
  avg = multicrop_eval.CropAverages(num_examples=3, num_classes=3, crops=2)
  avg.add({'probs': np.array([[0.6, 0.4, 0.0], [0.2, 0.8, 0.0], [0, 0, 1.0], [0.9, 0.1, 0.0]], np.float32),
           'example': np.array([0, 0, 1, -1]), 'label': np.array([1, 1, 2, 0]), 'mask': np.array([1, 1, 1, 0.0])})
  avg.add({'probs': np.array([[0.0, 0.0, 1.0]], np.float32), 'example': np.array([1]), 'label': np.array([2]),
           'mask': np.array([1.0])})
  probs, labels, seen = avg.probabilities()
  np.testing.assert_allclose(probs[0], [0.4, 0.6, 0.0])
  assert seen.tolist() == [True, True, False]  # image 2 never came (undecodable): left out, not scored as wrong
  s = multicrop_eval.scores(probs, labels, seen)
  assert s['count'] == 2 and s['top1'] == 1.0
  np.testing.assert_allclose(s['loss'], -(np.log(0.6) + np.log(1.0)) / 2, rtol=1e-6)
  avg.add({'probs': np.ones((1, 3), np.float32) / 3, 'example': np.array([1]), 'label': np.array([2]),
           'mask': np.array([1.0])})
  with pytest.raises(RuntimeError, match='other than 2'):
    avg.probabilities()  # image 1 now has 3 crops


def test_an_ensemble_averages_softmax_and_refuses_other_data():
  a = (np.array([[0.9, 0.1], [0.4, 0.6]]), np.array([0, 0]), np.array([True, True]))
  b = (np.array([[0.3, 0.7], [0.8, 0.2]]), np.array([0, 0]), np.array([True, False]))
  probs, labels, seen = multicrop_eval.ensemble([a, b])
  np.testing.assert_allclose(probs[0], [0.6, 0.4])
  assert seen.tolist() == [True, False]
  with pytest.raises(ValueError, match='same eval split'):
    multicrop_eval.ensemble([a, (np.ones((3, 2)) / 2, np.zeros(3, int), np.ones(3, bool))])
  with pytest.raises(ValueError, match='labels'):
    multicrop_eval.ensemble([a, (a[0], np.array([1, 1]), a[2])])


def test_the_loops_evaluator_runs_multi_crop_when_the_config_asks(finished_run):
  """config.eval_crops=10 in the training loop's evaluator: the same figures as inception.evaluate's 10 crops (the
  library both use), and 1 crop through the multi-crop path equals the loop's single-crop evaluation."""
  workdir, config, results = finished_run
  mesh = sharding.make_mesh(jax.devices()[:1])
  run = trained.load(workdir, mesh, weights='ema')
  raw = trained.load(workdir, mesh, weights='raw')
  state = types.SimpleNamespace(params=raw.params, model_state=raw.model_state, ema_params=run.params,
                                ema_model_state=run.model_state)
  one = multicrop_eval.MultiCropEvaluator(config, run.graphdef, mesh, 1)
  s = multicrop_eval.scores(*one.probabilities(run.params, run.model_state, run.num_classes))
  assert s['count'] == results['eval/examples']
  np.testing.assert_allclose([s['top1'], s['loss']], [results['eval_ema/top1'], results['eval_ema/loss']], rtol=1e-4)

  ten = ml_collections.ConfigDict(config.to_dict())
  ten.eval_crops = 10
  evaluator = classification.ClassificationEvaluator(ten, run.graphdef, mesh, build_source(ten))
  loop = evaluator.run(state)
  assert loop['eval/crops'] == 10 and loop['eval/examples'] == results['eval/examples']
  direct = multicrop_eval.MultiCropEvaluator(config, run.graphdef, mesh, 10)
  d = multicrop_eval.scores(*direct.probabilities(run.params, run.model_state, run.num_classes))
  np.testing.assert_allclose([loop['eval_ema/top1'], loop['eval_ema/loss']], [d['top1'], d['loss']], rtol=1e-5)
  assert abs(d['loss'] - s['loss']) > 1e-6  # 10 crops are not the single crop again


LINE = re.compile(r'^eval \((ensemble of 2 models, )?(\d+) crops, ema weights, (\d+) images\): '
                  r'top1=([0-9.]+) top5=([0-9.]+) loss=([0-9.]+)$', re.M)


def test_evaluate_prints_1_10_144_crops_an_ensemble_and_the_table(finished_run, tmp_path):
  """`--table` over a run and its copy: every model at 1, 10 and 144 crops and the 2-model ensemble; the JSON files;
  an ensemble of a model with itself scores as the model; a --config override reaches the runs' configs."""
  workdir, _, results = finished_run
  a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
  for w in (a, b):
    shutil.copytree(workdir, w)
  out = subprocess.run([sys.executable, '-m', 'inception.evaluate', f'--workdirs={a},{b}', '--table',
                        '--config.eval_batch_size=16', f'--out={tmp_path}'], cwd=REPO, capture_output=True,
                       text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = LINE.findall(out.stdout)
  assert [(bool(e), int(k)) for e, k, *_ in lines] == [
      (False, 1), (False, 1), (True, 1), (False, 10), (False, 10), (True, 10), (False, 144), (False, 144), (True, 144)]
  n = results['eval/examples']
  assert {int(x[2]) for x in lines} == {n}
  single, ensemble = lines[0], lines[2]
  assert single[3:] == ensemble[3:]  # a model with itself
  assert float(single[3]) == pytest.approx(results['eval_ema/top1'], abs=1e-4)
  for crops in (1, 10, 144):
    saved = json.loads(open(os.path.join(a, f'eval_{crops}crops_ema.json')).read())
    assert saved['crops'] == crops and saved['images'] == n and saved['step'] == 4
    assert json.loads(open(tmp_path / f'eval_ensemble_{crops}crops_ema.json').read())['workdirs'] == [a, b]
  table = (tmp_path / 'table.md').read_text()
  assert table.count('\n| ') == 9 and '| base |' in table and '| 2 | ensemble: a' in table
  assert len((tmp_path / 'table.csv').read_text().splitlines()) == 10
  assert re.search(r'images/s, [0-9.]+ crops/s', out.stdout)


def test_evaluate_names_a_bad_workdir_a_bad_override_and_a_missing_step(finished_run, tmp_path):
  out = subprocess.run([sys.executable, '-m', 'inception.evaluate', f'--workdir={tmp_path}'], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 1 and 'no config.json' in out.stderr
  out = subprocess.run([sys.executable, '-m', 'inception.evaluate', f'--workdir={finished_run[0]}',
                        '--config.eval_batchsize=4'], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 1 and "unknown key 'eval_batchsize'" in out.stderr
  out = subprocess.run([sys.executable, '-m', 'inception.evaluate', f'--workdir={finished_run[0]}', '--step=3'],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 1 and 'no checkpoint of step 3; it keeps steps 2, 4' in out.stderr
  env = {k: v for k, v in os.environ.items() if not k.startswith('JAX_')}
  out = subprocess.run([sys.executable, '-m', 'inception.evaluate', f'--workdir={finished_run[0]}', '--distributed'],
                       cwd=REPO, capture_output=True, text=True, timeout=300, env={**env, 'JAX_NUM_PROCESSES': '2'})
  assert out.returncode == 1 and out.stderr.strip().splitlines()[-1].startswith(
      "DistributedSetupError: Multi-process settings are incomplete: got ['num_processes']"), out.stderr[-2000:]


@pytest.mark.slow
def test_two_processes_evaluate_the_images_one_process_does(finished_run, tmp_path):
  """`--distributed` on 2 processes x 2 devices (gloo): each host crops its share of the images, both print the same
  10-crop figures as one process; only process 0 writes."""
  from launch import local  # pylint: disable=import-outside-toplevel
  workdir = str(tmp_path / 'run')
  shutil.copytree(finished_run[0], workdir)
  args = [sys.executable, '-m', 'inception.evaluate', f'--workdir={workdir}', '--crops=10',
          '--config.eval_batch_size=8']
  single = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert single.returncode == 0, single.stderr[-3000:]
  port = local.free_port()
  procs = []
  for p in range(2):
    env = local.process_env(2)
    env.update({'JAX_COORDINATOR_ADDRESS': f'127.0.0.1:{port}', 'JAX_NUM_PROCESSES': '2', 'JAX_PROCESS_ID': str(p)})
    procs.append(subprocess.Popen(args + ['--distributed'], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
  outs = [proc.communicate(timeout=600) for proc in procs]
  assert [proc.returncode for proc in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
  want = LINE.findall(single.stdout)
  assert len(want) == 1 and LINE.findall(outs[0][0]) == want
  assert not LINE.findall(outs[1][0])  # process 1 prints no result (gloo's connection lines aside)


def test_evaluate_reads_and_writes_a_gs_workdir_and_keeps_each_splits_results(finished_run, gcs):
  """A gs:// workdir on the Cloud Storage emulator (tests/services/gcs.py): evaluate loads the run from it and writes
  the run's and the ensemble's results there (--out a new gs:// folder); --split=train writes `_train` files beside
  the held-out split's result, which stays as it was."""
  workdir, _, results = finished_run
  run = upload(workdir, f'{gcs}/run')
  held_out = epath.Path(run, 'eval_1crops_ema.json')
  held_out.write_text('{"split": "eval"}')
  out = subprocess.run([sys.executable, '-m', 'inception.evaluate', f'--workdirs={run},{run}', '--split=train',
                        f'--out={gcs}/ensemble'], cwd=REPO, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert [(bool(e), int(k)) for e, k, *_ in LINE.findall(out.stdout)] == [(False, 1), (False, 1), (True, 1)]
  assert held_out.read_text() == '{"split": "eval"}'
  train = json.loads(epath.Path(run, 'eval_1crops_ema_train.json').read_text())
  assert train['split'] == 'train' and train['workdir'] == run and train['step'] == 4
  assert train['images'] > results['eval/examples']  # the training split is the larger one here
  ensemble = json.loads(epath.Path(gcs, 'ensemble', 'eval_ensemble_1crops_ema_train.json').read_text())
  assert ensemble['workdirs'] == [run] * 2 and ensemble['top1'] == train['top1']
  assert not os.path.exists(os.path.join(REPO, 'gs:'))  # nothing went to a local folder named after the URL

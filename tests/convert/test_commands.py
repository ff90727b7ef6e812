"""The whole path a user takes with imported weights, through the commands: convert a Keras file, evaluate it on an
image folder, predict images (the probabilities Keras gives for the same crops), then fine-tune it with init_from
(configs/finetune.py) onto 3 classes of the embedded data."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from inception import augment, config_checks, finetune, train, trained
from inception.data import crops as crops_lib
from tests.convert import keras_files
from tests.runs import MINI, REPO, restore_state
from tests.test_finetune import three_classes

SIZE = 75


def command(module, *args):
  out = subprocess.run([sys.executable, '-m', module, *args], cwd=REPO, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


@pytest.mark.slow
def test_convert_evaluate_predict_and_fine_tune_keras_weights(tmp_path):
  model = keras_files.build('inception_v3', SIZE, classes=10)
  keras_files.save(model, str(tmp_path / 'inception_v3.h5'))
  workdir = str(tmp_path / 'keras_v3')

  out = command('inception.convert', '--format=keras_h5', '--model=inception_v3', str(tmp_path / 'inception_v3.h5'),
                f'--out={workdir}', f'--image_size={SIZE}')
  assert out.strip().splitlines()[-1] == f'converted: 378 tensors -> {workdir}'

  bad = subprocess.run([sys.executable, '-m', 'inception.evaluate', f'--workdir={workdir}',
                        '--config.data.source=folder', f'--config.data.root={MINI}', '--config.eval_batch_size=50'],
                       cwd=REPO, capture_output=True, text=True, timeout=600)  # 4 devices here
  assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1] == (
      'ConfigError: --config.eval_batch_size=50 must be divisible by the 4 devices (1 processes): set it to a multiple '
      'of 4.'), bad.stderr[-1000:]
  out = command('inception.evaluate', f'--workdir={workdir}', '--config.data.source=folder',
                f'--config.data.root={MINI}', '--config.eval_batch_size=40')
  last = out.strip().splitlines()[-1]
  assert last.startswith('eval (1 crops, ema weights, ') and 'top1=' in last, out[-500:]

  images = [os.path.join(MINI, cls, sorted(os.listdir(os.path.join(MINI, cls)))[0]) for cls in ('watch', 'ketch')]
  out = command('inception.predict', f'--workdir={workdir}', '--json', '--top=10', *images)
  pp = augment.stage_pp(trained.load_config(workdir).pp, 'eval')  # the converted run's eval transform
  for line, path in zip(out.strip().splitlines(), images):
    got = json.loads(line)
    crop = crops_lib.multi_crop(tf.constant(open(path, 'rb').read()), 1, pp).numpy()  # the eval crop, uint8
    keras_probs = np.asarray(tf.nn.softmax(keras_files.logits(model, crop / 127.5 - 1.0)))[0]  # Keras' own scaling
    ours = np.zeros(10)
    for entry in got['top']:
      ours[entry['index']] = entry['prob']
    assert got['path'] == path and np.abs(ours - keras_probs).max() < 1e-5, (ours, keras_probs)

  c = config_checks.load_config('configs/finetune.py:inception_v3')
  c.data.root = three_classes(tmp_path / 'images')
  c.init_from = workdir
  c.workdir = str(tmp_path / 'tuned')
  c.pp.image_size = SIZE
  c.batch_size, c.eval_batch_size, c.num_epochs = 8, 8, 1
  c.optimizer.lr_batch_size = 8
  c.log_every_steps, c.eval_every_epochs = 1, 1
  results = train.train_and_evaluate(c)
  assert 'eval/top1' in results
  _, tuned, _ = restore_state(c.workdir)
  source, _, _ = finetune.read_weights(workdir)
  params = finetune._flat(tuned['params'])  # pylint: disable=protected-access
  assert params['head/fc/kernel'].shape == (2048, 3)  # a new classifier for the 3 classes
  kernel = 'mixed_7c/branch_pool/conv/kernel'
  moved = np.abs(np.asarray(params[kernel]) - source[kernel]).max()
  assert 0 < moved < 0.1 * np.abs(source[kernel]).max()  # the backbone started from the converted weights


def test_the_command_refuses_plainly(tmp_path):
  out = subprocess.run([sys.executable, '-m', 'inception.convert', '--format=caffe', '--model=googlenet',
                        str(tmp_path / 'x'), f'--out={tmp_path / "out"}'], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 1 and out.stderr.strip().splitlines()[-1] == (
      'ConvertError: --format=caffe: unknown; use one of keras_h5, onnx, timm_safetensors.')
  out = subprocess.run([sys.executable, '-m', 'inception.convert', '--format=onnx', '--model=googlenet',
                        str(tmp_path / 'missing.onnx'), f'--out={tmp_path / "out"}'], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 1 and out.stderr.strip().splitlines()[-1].startswith(
      f'ConvertError: {tmp_path / "missing.onnx"}: no such file. Pass the weight file you downloaded')

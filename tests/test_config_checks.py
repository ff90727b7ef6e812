"""Configs load, and command-line overrides with unknown keys or wrong types fail with a clear message."""
import os
import subprocess
import sys

import pytest

from configs import googlenet
from inception import config_checks, models
from tests.runs import REPO

SPEC = 'configs/googlenet.py:mini'


@pytest.mark.parametrize('variant', list(googlenet.VARIANTS))
def test_every_variant_loads(variant):
  c = googlenet.get_config(variant)
  assert c.model.name in ('googlenet', 'googlenet_bn')
  assert c.batch_size > 0 and c.num_epochs > 0


def test_default_is_the_paper_recipe():
  c = googlenet.get_config()
  assert (c.model.name, c.data.tfds_name, c.pp.image_size) == ('googlenet', 'imagenet2012', 224)
  assert (c.optimizer.momentum, c.schedule.decay_rate, c.schedule.decay_epochs) == (0.9, 0.96, 8)
  assert (c.loss.aux_weight, c.model.dropout_rate, c.model.aux_dropout_rate) == (0.3, 0.4, 0.7)
  assert tuple(c.pp.train.area_range) == (0.08, 1.0)


FULL_CALTECH = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data', 'caltech101')


@pytest.mark.skipif(not os.path.isdir(FULL_CALTECH), reason='the full Caltech 101 is not at ../shared/data/caltech101')
def test_caltech101_variant_reads_the_full_folder():
  """The README's full-Caltech command: its config finds all 101 classes and yields real batches."""
  from inception.data import pipeline
  c = googlenet.get_config('caltech101')
  c.data.root = FULL_CALTECH
  source = pipeline.build_source(c)
  assert source.num_classes == 101
  assert source.num_examples('train') + source.num_examples('eval') == 8677
  batch = next(pipeline.train_batches(c, process_index=0, process_count=1))
  assert batch['image'].shape == (c.batch_size, 128, 128, 3)
  assert batch['label'].max() < 101


@pytest.mark.skipif(not os.path.isdir(FULL_CALTECH), reason='the full Caltech 101 is not at ../shared/data/caltech101')
def test_finetune_pretraining_leaves_out_exactly_the_embedded_classes():
  """The README's `configs/finetune.py:mini_pretrain`: the full Caltech 101 less the embedded subset's 10 classes, so
  its fine-tuning (`:mini`) is evaluated on classes the pretraining never saw."""
  from inception.data import pipeline
  c = config_checks.load_config('configs/finetune.py:mini_pretrain')
  c.data.root = FULL_CALTECH
  source = pipeline.build_source(c)
  embedded = sorted(e for e in os.listdir(os.path.join(os.path.dirname(__file__), '..', 'data', 'caltech101-mini'))
                    if not e.endswith('.md'))
  assert sorted(c.data.exclude_classes) == embedded and source.num_classes == 91
  assert not set(source.class_names) & set(embedded)


def test_unknown_variant():
  with pytest.raises(ValueError, match="Unknown googlenet config variant 'nope'"):
    googlenet.get_config('nope')


def test_valid_overrides_pass():
  config_checks.check_overrides(['--config', SPEC, '--config.optimizer.lr=0.05', '--config.num_epochs', '3',
                                 '--config.pp.train.area_range=(0.1, 1.0)', '--config.model.aux_heads=false'])


@pytest.mark.parametrize('arg, message', [
    ('--config.optimizer.lrr=0.1', "unknown key 'optimizer.lrr'.*keys there: lr, lr_batch_size, momentum"),
    ('--config.nope=1', "no 'nope' at the top level"),
    ('--config.batch_size=ten', r'expected a value of type int, like \d+'),
    ('--config.num_epochs=ten', r'expected a value of type float, like \d+\.\d'),
    ('--config.optimizer.lr=fast', 'expected a value of type float'),
    ('--config.model.aux_heads=maybe', 'expected a value of type bool'),
    ('--config.pp.train.area_range=0.5', 'expected a value of type tuple'),
])
def test_bad_overrides_are_named(arg, message):
  with pytest.raises(config_checks.ConfigError, match=message):
    config_checks.check_overrides([f'--config={SPEC}', arg])


def test_command_line_reports_unknown_key_and_exits():
  proc = subprocess.run([sys.executable, '-m', 'inception.main', f'--config={SPEC}', '--config.optimizer.lrr=1'],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert "ConfigError: unknown key 'optimizer.lrr'" in proc.stderr


@pytest.mark.parametrize('variant', sorted(googlenet.VARIANTS))
def test_every_variant_passes_the_semantic_checks(variant):
  config = googlenet.get_config(variant)
  config_checks.check_config(config)
  models.check_model_config(config.model, config.pp.image_size)


@pytest.mark.parametrize('key, value, allowed', [
    ('num_epochs', -1.0, 'a number > 0'),
    ('num_epochs', 0.0, 'a number > 0'),
    ('batch_size', 0, 'an integer > 0'),
    ('eval_batch_size', -8, 'an integer > 0'),
    ('pp.image_size', 0, 'an integer > 0'),
    ('pp.train.area_range', (0.5, 0.2), '0 < low <= high <= 1'),
    ('pp.train.area_range', (0.0, 1.0), '0 < low <= high <= 1'),
    ('pp.train.area_range', (0.1, 1.5), '0 < low <= high <= 1'),
    ('pp.train.aspect_range', (1.5, 0.5), '0 < low <= high'),
    ('pp.train.max_attempts', 0, 'an integer >= 1'),
    ('pp.eval.crop_ratio', 1.2, 'a fraction in (0, 1]'),
    ('pp.eval.crop_ratio', 0.0, 'a fraction in (0, 1]'),
    ('data.val_fraction', 1.0, 'a fraction in [0, 1)'),
    ('data.max_bad_fraction', -0.1, 'a fraction in [0, 1]'),
    ('data.rows_per_task', 0, 'an integer >= 1'),
    ('data.tasks_per_core', 0, 'an integer >= 1'),
    ('optimizer.lr', 0.0, 'a number > 0'),
    ('optimizer.momentum', 1.0, 'a number in [0, 1)'),
    ('optimizer.weight_decay', -1e-4, 'a number >= 0'),
    ('schedule.decay_rate', 0.0, 'a number in (0, 1]'),
    ('schedule.warmup_epochs', -1, 'a number >= 0'),
    ('ema.decay', 1.0, 'a number in [0, 1)'),
    ('loss.label_smoothing', 1.0, 'a number in [0, 1)'),
    ('model.dropout_rate', 1.0, 'a number in [0, 1)'),
    ('model.dtype', 'float8', "'float32', 'bfloat16' or 'float16'"),
    ('checkpoint_every_steps', 0, 'an integer >= 1'),
    ('nan_policy', 'ignore', "'stop' or 'skip'"),
])
def test_each_rule_names_the_key_the_value_and_what_is_allowed(key, value, allowed):
  config = googlenet.get_config('mini')
  *parents, leaf = key.split('.')
  node = config
  for part in parents:
    node = node[part]
  node[leaf] = value
  with pytest.raises(config_checks.ConfigError) as error:
    config_checks.check_config(config)
  assert str(error.value).startswith(f'--config.{key}={value!r}: expected {allowed}')


def test_image_size_below_the_model_minimum_says_the_minimum():
  config = googlenet.get_config('mini')
  models.check_model_config(config.model, 32)
  with pytest.raises(config_checks.ConfigError, match=r'--config.pp.image_size=31: googlenet_bn needs at least 32 px'):
    models.check_model_config(config.model, 31)


def test_command_line_config_errors_exit_within_seconds_with_one_line(tmp_path):
  """A value out of range stops the command line with one line and writes nothing (num_epochs=-1 must not write
  checkpoints/-2 and exit 0)."""
  workdir = tmp_path / 'run'
  proc = subprocess.run([sys.executable, '-m', 'inception.main', '--config=configs/googlenet.py:mini',
                         '--config.num_epochs=-1', f'--config.workdir={workdir}'],
                        cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1] == 'ConfigError: --config.num_epochs=-1.0: expected a number > 0.'
  assert 'Traceback' not in proc.stderr and not workdir.exists()


def test_overrides_apply_to_a_saved_config_with_the_keys_types():
  """apply_overrides (inception.evaluate's --config.* on a run's config.json): values take the key's type, the
  original is left alone, unknown keys and groups are named."""
  from inception.config_checks import ConfigError, apply_overrides
  saved = googlenet.get_config('mini')
  c = apply_overrides(saved, [('eval_batch_size', '50'), ('optimizer.lr', '0.5'), ('ema.warmup', 'false'),
                              ('pp.value_range', '(0.0, 1.0)'), ('model.name', 'inception_tiny')])
  assert (c.eval_batch_size, c.optimizer.lr, c.ema.warmup, tuple(c.pp.value_range), c.model.name) == (
      50, 0.5, False, (0.0, 1.0), 'inception_tiny')
  assert saved.eval_batch_size == 100
  with pytest.raises(ConfigError, match="unknown key 'optimizer.rate'"):
    apply_overrides(saved, [('optimizer.rate', '1')])
  with pytest.raises(ConfigError, match='group of keys'):
    apply_overrides(saved, [('optimizer', '1')])
  with pytest.raises(ConfigError, match='expected a value of type int'):
    apply_overrides(saved, [('eval_batch_size', 'many')])

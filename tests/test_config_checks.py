"""Configs load, and command-line overrides with unknown keys or wrong types fail with a clear message."""
import os
import subprocess
import sys

import pytest

from configs import googlenet
from inception import config_checks

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


def test_unknown_variant():
  with pytest.raises(ValueError, match="Unknown googlenet config variant 'nope'"):
    googlenet.get_config('nope')


def test_valid_overrides_pass():
  config_checks.check_overrides(['--config', SPEC, '--config.optimizer.lr=0.05', '--config.num_epochs', '3',
                                 '--config.pp.train.area_range=(0.1, 1.0)', '--config.model.aux_heads=false'])


@pytest.mark.parametrize('arg, message', [
    ('--config.optimizer.lrr=0.1', "unknown key 'optimizer.lrr'.*keys there: lr, lr_batch_size, momentum"),
    ('--config.nope=1', "no 'nope' at the top level"),
    ('--config.num_epochs=ten', 'expected a value of type int, like 14'),
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
  assert "Config error: unknown key 'optimizer.lrr'" in proc.stderr

"""Configs load, and command-line overrides with unknown keys or wrong types fail with a clear message."""
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


def test_unknown_variant():
  with pytest.raises(ValueError, match="Unknown googlenet config variant 'nope'"):
    googlenet.get_config('nope')


def test_valid_overrides_pass():
  config_checks.check_overrides(['--config', SPEC, '--config.optimizer.lr=0.05', '--config.num_epochs', '3',
                                 '--config.pp.train.area_range=(0.1, 1.0)', '--config.model.aux_heads=false'])


@pytest.mark.parametrize('arg, message', [
    ('--config.optimizer.lrr=0.1', "unknown key 'optimizer.lrr'.*keys there: lr, momentum"),
    ('--config.nope=1', "no 'nope' at the top level"),
    ('--config.num_epochs=ten', "expected a int like 16"),
    ('--config.optimizer.lr=fast', 'expected a float'),
    ('--config.model.aux_heads=maybe', 'expected a bool'),
    ('--config.pp.train.area_range=0.5', 'expected a tuple'),
])
def test_bad_overrides_are_named(arg, message):
  with pytest.raises(config_checks.ConfigError, match=message):
    config_checks.check_overrides([f'--config={SPEC}', arg])


def test_command_line_reports_unknown_key_and_exits():
  proc = subprocess.run([sys.executable, '-m', 'inception.main', f'--config={SPEC}', '--config.optimizer.lrr=1'],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert "Config error: unknown key 'optimizer.lrr'" in proc.stderr

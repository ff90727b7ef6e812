"""Learning-rate schedules, the weight-decay mask and Polyak averaging."""
import jax.numpy as jnp
import numpy as np
import pytest

from configs import googlenet
from inception import optim


def _config(**schedule):
  c = googlenet.get_config()
  c.optimizer.lr = 0.1
  c.optimizer.lr_batch_size = c.batch_size  # no batch scaling: the schedule's shape alone
  c.schedule.update(schedule)
  return c


def test_staircase_drops_4_percent_every_8_epochs():
  steps_per_epoch = 10
  lr = optim.make_schedule(_config(decay_rate=0.96, decay_epochs=8, warmup_epochs=0), steps_per_epoch, 1000)
  for epoch, expected in [(0, 0.1), (7.9, 0.1), (8, 0.096), (15.9, 0.096), (16, 0.1 * 0.96**2), (40, 0.1 * 0.96**5)]:
    np.testing.assert_allclose(float(lr(int(epoch * steps_per_epoch))), expected, rtol=1e-6)


def test_linear_warmup_then_staircase():
  lr = optim.make_schedule(_config(decay_rate=0.5, decay_epochs=2, warmup_epochs=1), 10, 100)
  # Step s of the 10 warm-up steps gets 0.1 * (s + 1) / 10: the first step learns, step 9 reaches the peak.
  np.testing.assert_allclose([float(lr(s)) for s in (0, 4, 9, 10, 19, 20)], [0.01, 0.05, 0.1, 0.1, 0.1, 0.05],
                             rtol=1e-6)


@pytest.mark.parametrize('batch_size, expected', [(32, 0.01), (256, 0.08), (1024, 0.32), (16, 0.005)])
def test_learning_rate_scales_linearly_with_the_global_batch(batch_size, expected):
  """The recipe's lr 0.01 is tuned at batch 32 (Caffe); a global batch of B uses 0.01 * B / 32, warm-up included."""
  c = googlenet.get_config()
  c.batch_size = batch_size
  c.schedule.warmup_epochs = 1
  assert optim.base_lr(c) == pytest.approx(expected)
  lr = optim.make_schedule(c, 10, 1000)
  np.testing.assert_allclose([float(lr(0)), float(lr(4)), float(lr(10))], [expected / 10, expected / 2, expected],
                             rtol=1e-6)


def test_cosine_reaches_zero():
  lr = optim.make_schedule(_config(name='cosine', warmup_epochs=0), 10, 100)
  assert float(lr(0)) == pytest.approx(0.1)
  assert float(lr(50)) == pytest.approx(0.05, rel=1e-5)
  assert float(lr(100)) == pytest.approx(0.0, abs=1e-7)


def test_unknown_schedule_is_named():
  with pytest.raises(ValueError, match="Unknown schedule 'linear'"):
    optim.make_schedule(_config(name='linear'), 10, 100)


def test_weight_decay_only_on_kernels():
  c = _config()
  c.optimizer.update(momentum=0.0, weight_decay=0.5)
  tx = optim.make_optimizer(c, lambda step: 1.0)
  params = {'kernel': jnp.ones((3, 3)), 'bias': jnp.ones((3,)), 'scale': jnp.ones((3,))}
  zeros = {k: jnp.zeros_like(v) for k, v in params.items()}
  updates, _ = tx.update(zeros, tx.init(params), params)
  np.testing.assert_allclose(updates['kernel'], -0.5)   # -lr * wd * w
  np.testing.assert_allclose(updates['bias'], 0.0)
  np.testing.assert_allclose(updates['scale'], 0.0)


def test_ema_arithmetic():
  cfg = _config().ema
  cfg.update(decay=0.9, warmup=False)
  ema = {'w': jnp.array([1.0, 2.0])}
  for _ in range(3):
    ema = optim.ema_update(ema, {'w': jnp.array([0.0, 4.0])}, optim.ema_decay(cfg, jnp.asarray(100)))
  np.testing.assert_allclose(ema['w'], [0.9**3, 4 - 2 * 0.9**3], rtol=1e-6)


def test_ema_warmup_follows_tensorflow_num_updates():
  cfg = _config().ema
  cfg.update(decay=0.999, warmup=True)
  assert float(optim.ema_decay(cfg, jnp.asarray(0))) == pytest.approx(0.1)
  assert float(optim.ema_decay(cfg, jnp.asarray(90))) == pytest.approx(91 / 100)
  assert float(optim.ema_decay(cfg, jnp.asarray(10**6))) == pytest.approx(0.999)

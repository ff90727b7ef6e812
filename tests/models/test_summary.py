"""Tests for the model summary: multiply-add counting from jaxprs and the command line."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from inception.models import MODELS
from inception.models import googlenet
from inception.models import summary

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _macs(fn, *shapes):
  """Multiply-adds counted from the jaxpr of fn on float32 inputs of the given shapes."""
  args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
  return summary.count_multiply_adds(jax.make_jaxpr(fn)(*args))


def _googlenet_macs_by_hand(image_size=224, num_classes=1000):
  """Multiply-adds of the inference path from Table 1, written out independently."""
  s = image_size // 2
  total = s * s * 7 * 7 * 3 * 64  # conv1
  s //= 2
  total += s * s * (64 * 64 + 3 * 3 * 64 * 192)  # conv2 reduce + 3x3
  channels = 192
  for group, size in (('3', s // 2), ('4', s // 4), ('5', s // 8)):
    for block, (c1, r3, c3, r5, c5, pp) in googlenet.INCEPTION_WIDTHS.items():
      if block.startswith(group):
        total += size * size * (channels * (c1 + r3 + r5 + pp) + 9 * r3 * c3 + 25 * r5 * c5)
        channels = c1 + c3 + c5 + pp
  return total + channels * num_classes


def test_counts_dot_general():
  """dot_general counts prod(output) * contracted size."""
  assert _macs(jnp.dot, (3, 4), (4, 5)) == 3 * 4 * 5
  assert _macs(lambda a, b: jnp.einsum('bij,bjk->bik', a, b), (2, 3, 4), (2, 4, 5)) == 120


def test_counts_grouped_convolution():
  """Grouped convolutions count only the inputs each output sees."""
  def conv(x, k):
    """A 3x3 convolution in two feature groups."""
    return jax.lax.conv_general_dilated(x, k, (1, 1), 'SAME', feature_group_count=2,
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  # Output 8x8x6, each output sees 3x3 x (4 / 2) inputs.
  assert _macs(conv, (1, 8, 8, 4), (3, 3, 2, 6)) == 8 * 8 * 6 * 3 * 3 * 2


def test_recurses_into_sub_jaxprs():
  """Counts inside jit, custom_jvp and scan (times its length)."""
  inner = jax.jit(jnp.dot)

  @jax.custom_jvp
  def custom(a, b):
    """A dot product hidden inside a custom_jvp call."""
    return jnp.dot(a, b)
  custom.defjvp(lambda primals, tangents: (custom(*primals), jnp.dot(tangents[0], primals[1])))

  def scanned(a, b):
    """The same dot product four times in a scan."""
    return jax.lax.scan(lambda c, _: (c, jnp.dot(a, b)), 0.0, None, length=4)[1]

  assert _macs(lambda a, b: inner(a, b) + custom(a, b), (3, 4), (4, 5)) == 2 * 60
  assert _macs(scanned, (3, 4), (4, 5)) == 4 * 60


def test_summarize_googlenet_totals_and_rows():
  """summarize() gives the paper totals and the hand-counted multiply-adds."""
  model = nnx.eval_shape(lambda: MODELS.get('googlenet')(num_classes=1000,
                                                          rngs=nnx.Rngs(params=0)))
  rows, totals = summary.summarize(model, 224)
  assert totals['params'] == 13_378_280
  assert totals['params_without_aux'] == 6_998_552
  assert totals['multiply_adds'] == _googlenet_macs_by_hand()
  assert [r.name for r in rows] == list(googlenet.STAGE_NAMES) + ['aux_4a', 'aux_4d']
  by_name = {r.name: r for r in rows}
  assert by_name['inception_5b'].output_shape == (1, 7, 7, 1024)
  assert by_name['aux_4a'].output_shape == (1, 1000)
  assert sum(r.params for r in rows) == totals['params']
  assert model.deterministic is False  # summarize does not change the caller's model.


def test_command_line_prints_totals():
  """The command ends with the total lines, then the line naming what computes the convolutions."""
  result = subprocess.run([sys.executable, '-m', 'inception.models', 'googlenet'],
                          cwd=REPO_ROOT, capture_output=True, text=True, check=True,
                          timeout=120)
  *_, params, stats, no_aux, macs, path = result.stdout.strip().splitlines()
  last = [params, stats, no_aux, macs]
  assert path.startswith('convolutions: CPU kernels on'), path
  assert last[0] == 'params: 13378280'
  assert last[1] == 'batch statistics: 0'  # LRN, no BatchNorm
  assert last[2] == 'params without aux heads: 6998552'
  key, value = last[3].split(': ')
  assert key == 'multiply-adds' and 1.5e9 < int(value) < 1.65e9


def test_command_line_other_model_and_sizes():
  """The command honours the model name, classes and image size."""
  result = subprocess.run(
      [sys.executable, '-m', 'inception.models', 'googlenet_bn', '--num-classes', '10',
       '--image-size', '112'], cwd=REPO_ROOT, capture_output=True, text=True, check=True,
      timeout=120)
  assert 'head            (1, 10)' in result.stdout
  assert 'pool4           (1, 3, 3, 832)' in result.stdout


def test_command_line_unknown_model_fails():
  """An unknown model name fails and lists the known ones."""
  result = subprocess.run([sys.executable, '-m', 'inception.models', 'nonet'], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert 'googlenet_bn' in result.stderr


@pytest.mark.parametrize('image_size', [112, 128])
def test_summarize_smaller_inputs(image_size):
  """At 112 and 128 px the count matches the hand formula too."""
  model = nnx.eval_shape(lambda: MODELS.get('googlenet')(
      num_classes=10, image_size=image_size, rngs=nnx.Rngs(params=0)))
  rows, totals = summary.summarize(model, image_size)
  assert rows[-1].output_shape == (1, 10)
  # Both sizes halve exactly down to 4a (112 -> ... -> 7 -> 3, 128 -> ... -> 8 -> 4).
  assert totals['multiply_adds'] == _googlenet_macs_by_hand(image_size, num_classes=10)

"""The shared blocks' pooling conventions: TF's average over the window's part inside the image ('same') and
PyTorch's division by the whole window over zero padding (an int padding, `count_padding`)."""
import numpy as np

from inception.models import blocks
from inception.models.blocks import Conv, Pool


def test_average_pools_count_the_padding_only_when_asked():
  x = np.ones((1, 4, 4, 2), np.float32)
  tf_style = np.asarray(blocks.pool(x, Pool('avg', 3, 1, 'same')))
  torch_style = np.asarray(blocks.pool(x, Pool('avg', 3, 1, 1)))
  np.testing.assert_allclose(tf_style, 1.0)  # every output averages ones
  assert torch_style[0, 0, 0, 0] == np.float32(4 / 9) and torch_style[0, 0, 1, 0] == np.float32(6 / 9)
  assert torch_style[0, 1, 1, 0] == 1.0 and torch_style.shape == x.shape


def test_count_padding_rewrites_only_the_same_average_pools():
  spec = ((Conv('a', 4, 1),), (Pool('avg', 3, 1, 'same'), Conv('b', 4, 1)), (Pool('max', 3, 2),))
  assert blocks.count_padding(spec) == ((Conv('a', 4, 1),), (Pool('avg', 3, 1, 1), Conv('b', 4, 1)),
                                        (Pool('max', 3, 2),))

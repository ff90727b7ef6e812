"""The greedy bipartite matching through the priors (inception/detection/matching.py) on hand-made cases."""
import jax.numpy as jnp
import numpy as np

from inception.detection import matching

U = matching.UNMATCHED


def _match(cost, valid=None):
  cost = jnp.asarray(cost, jnp.float32)
  valid = jnp.ones(cost.shape[1], bool) if valid is None else jnp.asarray(valid)
  return np.asarray(matching.greedy_match(cost, valid)).tolist()


def test_each_box_takes_its_nearest_free_prior():
  assert _match([[5, 1], [0.5, 9], [7, 7]]) == [1, 0, U]


def test_greedy_takes_the_least_cost_pair_first_not_the_least_total():
  # Greedy: (0, 0) at cost 1, then (1, 1) at 100: total 101. The least total would be (0, 1) and (1, 0): 5.
  assert _match([[1, 2], [3, 100]]) == [0, 1]


def test_padding_rows_are_never_matched():
  assert _match([[1, 0], [2, 0]], valid=[True, False]) == [0, U]
  assert _match([[1, 0], [2, 0]], valid=[False, False]) == [U, U]


def test_more_boxes_than_priors_leaves_the_farthest_out():
  assert _match([[1, 3, 9], [2, 4, 8]]) == [0, 1]


def test_ties_go_to_the_lower_prior_then_the_lower_box():
  assert _match([[1, 1], [1, 1]]) == [0, 1]


def test_batch_matching_through_the_priors():
  priors = jnp.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.0, 0.5, 0.5, 1.0]])
  gt = jnp.array([[[0.55, 0.5, 1.0, 0.95], [0.0, 0.05, 0.45, 0.5], [0, 0, 0, 0]],
                  [[0.0, 0.6, 0.5, 1.0], [0, 0, 0, 0], [0, 0, 0, 0]]])
  valid = matching.valid_boxes(gt)
  assert np.asarray(valid).tolist() == [[True, True, False], [True, False, False]]
  assert np.asarray(matching.match_batch(priors, gt, valid)).tolist() == [[1, 0, U], [U, U, 0]]
  expected = [0.55 ** 2 + 0.5 ** 2 + 0.5 ** 2 + 0.45 ** 2, 0.05 ** 2 + 0.05 ** 2, 0.55 ** 2 + 0.5 ** 2 + 0.05 ** 2]
  np.testing.assert_allclose(matching.match_cost(priors, gt[0])[:, 0], expected, rtol=1e-6)

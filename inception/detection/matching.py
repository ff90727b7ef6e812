"""MultiBox's matching of ground-truth boxes to predictions, through the priors (Erhan et al. 2014, section 3).

Erhan et al. assign each ground-truth box to one prediction by a bipartite matching of least total squared distance;
with priors the distance is taken between the ground truth and each prediction's prior rather than the prediction
itself, so the assignment does not move while the network learns. The rule implemented here, in JAX inside the train
and eval steps (pure, batched, any device):

  cost[i, j] = || prior_i - gt_j ||^2 over the normalised (x0, y0, x1, y1);
  repeat: the pair (i, j) of least cost among priors and ground truths not yet matched is matched,
  until every ground truth has a prior (or the priors run out).

This is greedy bipartite matching: every ground truth gets its own prior (when there are at least as many priors as
boxes) and no prior serves two boxes, as in the paper, but the total cost is not always the least (the Hungarian
algorithm's): a box may lose its nearest prior to a box that is even nearer to it, and take its next best. Ties go to
the lower prior index, then the lower box index.
"""
import jax
import jax.numpy as jnp

UNMATCHED = -1


def match_cost(priors: jax.Array, gt_boxes: jax.Array) -> jax.Array:
  """[K, G] squared Euclidean distances between priors [K, 4] and ground-truth boxes [G, 4]."""
  return jnp.sum((priors[:, None, :] - gt_boxes[None, :, :]) ** 2, axis=-1)


def greedy_match(cost: jax.Array, valid: jax.Array) -> jax.Array:
  """The greedy bipartite matching of one image (module docstring): cost [K, G], valid [G] (padding rows False) ->
  int32 [K]: for each prior the index of its ground-truth box, or UNMATCHED."""
  num_priors, num_gt = cost.shape
  inf = jnp.asarray(jnp.inf, cost.dtype)
  cost = jnp.where(valid[None, :], cost, inf)

  def step(_, carry):
    cost, assignment = carry
    flat = jnp.argmin(cost)  # the first of equal minima in row-major order: lower prior, then lower box
    i, j = flat // num_gt, flat % num_gt
    found = jnp.isfinite(cost[i, j])
    assignment = jnp.where(found, assignment.at[i].set(j.astype(jnp.int32)), assignment)
    cost = jnp.where(found, cost.at[i, :].set(inf).at[:, j].set(inf), cost)
    return cost, assignment

  start = (cost, jnp.full([num_priors], UNMATCHED, jnp.int32))
  return jax.lax.fori_loop(0, min(num_priors, num_gt), step, start)[1]


def match_batch(priors: jax.Array, gt_boxes: jax.Array, valid: jax.Array) -> jax.Array:
  """greedy_match for a batch: priors [K, 4], gt_boxes [B, G, 4], valid [B, G] -> int32 [B, K]."""
  return jax.vmap(lambda boxes, ok: greedy_match(match_cost(priors, boxes), ok))(gt_boxes, valid)


def valid_boxes(gt_boxes: jax.Array) -> jax.Array:
  """[B, G] whether each row of padded ground-truth boxes [B, G, 4] is a box: padding rows are all zero, and a real
  box has positive width and height (the VOC reader leaves out every other box)."""
  return (gt_boxes[..., 2] > gt_boxes[..., 0]) & (gt_boxes[..., 3] > gt_boxes[..., 1])

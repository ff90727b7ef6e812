"""The stage protocol every model here follows: an ordered list of named stages plus optional auxiliary heads.

`stage_names` lists the stages in order (each an attribute); `aux_names` the aux heads and `aux_taps` the stage each
one reads. `deterministic` (set by model.train()/eval()) decides whether the aux heads run. models/summary.py walks the
same protocol stage by stage.
"""
from typing import Optional, Tuple

import jax
from flax import nnx


class StagedNet(nnx.Module):
  """Calling returns (logits, aux_logits): float32 [B, num_classes] and a tuple of such arrays in training mode with
  aux heads, () otherwise. Subclasses set `dtype`, `stage_names`, `aux_heads`, `aux_names`, `aux_taps` and the
  stages, and `deterministic = False` in __init__; only the stage named 'head' takes `rngs` (for dropout)."""

  def set_view(self, deterministic: Optional[bool] = None):
    """Lets nnx.view(model, deterministic=...) switch the aux heads like model.train()/eval()."""
    if deterministic is not None:
      self.deterministic = deterministic

  def call_stage(self, name: str, x: jax.Array, *, rngs: Optional[nnx.Rngs] = None) -> jax.Array:
    """Runs one named stage; only the head takes `rngs` (for dropout)."""
    stage = getattr(self, name)
    return stage(x, rngs=rngs) if name == 'head' else stage(x)

  def call_aux(self, name: str, x: jax.Array, *, rngs: Optional[nnx.Rngs] = None) -> jax.Array:
    """Runs one named auxiliary head on the output of its tapped stage."""
    return getattr(self, name)(x, rngs=rngs)

  def __call__(self, images: jax.Array, *, rngs: Optional[nnx.Rngs] = None
               ) -> Tuple[jax.Array, Tuple[jax.Array, ...]]:
    """images [B, H, W, 3] -> (logits [B, num_classes] float32, aux logits tuple)."""
    if isinstance(rngs, jax.Array):  # A bare key: wrap so each dropout gets a fresh key.
      rngs = nnx.Rngs(dropout=rngs)
    run_aux = self.aux_heads and not self.deterministic
    x = images.astype(self.dtype)
    taps = {}
    for name in self.stage_names:
      x = self.call_stage(name, x, rngs=rngs)
      if run_aux and name in self.aux_taps:
        taps[name] = x
    aux_logits = ()
    if run_aux:
      aux_logits = tuple(self.call_aux(n, taps[t], rngs=rngs) for n, t in zip(self.aux_names, self.aux_taps))
    return x, aux_logits

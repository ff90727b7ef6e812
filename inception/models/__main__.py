"""`python -m inception.models NAME [--num-classes N] [--image-size S]`: print a model summary.

The model is built abstractly (nnx.eval_shape), so no parameters are materialized. The last line names what computes
the convolutions and pools on this machine's backend with the CPU kernels on (models/ops.py).
"""
from typing import Optional, Sequence

import jax
from flax import nnx

from inception import command
from inception.models import MODELS
from inception.models import ops
from inception.models import summary


def main(argv: Optional[Sequence[str]] = None) -> None:
  """Parses the command line, builds the named model shape-only and prints its summary."""
  parser = command.ArgumentParser(prog='python -m inception.models', description=__doc__)
  parser.add_argument('name', help=f'model name, one of: {", ".join(MODELS.names())}')
  parser.add_argument('--num-classes', type=int, default=1000)
  parser.add_argument('--image-size', type=int, default=224)
  args = parser.parse_args(argv)
  try:
    constructor = MODELS.get(args.name)
  except ValueError as e:
    parser.error(str(e))
  model = nnx.eval_shape(lambda: constructor(
      num_classes=args.num_classes, image_size=args.image_size, rngs=nnx.Rngs(params=0)))
  rows, totals = summary.summarize(model, args.image_size)
  print(summary.format_summary(rows, totals))
  print(ops.describe(ops.DEFAULT, jax.default_backend()))


if __name__ == '__main__':
  command.run_script(main)  # it computes no step: never restarts

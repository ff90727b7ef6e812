"""This project's train and eval steps against the PyTorch reference (benchmarks/pytorch_googlenet.py), alternating runs:

  python benchmarks/compare_pytorch.py --torch-python=/path/to/python-with-torch [--rounds=2] [--batch=32] \
      [--image-size=224] [--train-steps=3] [--eval-steps=5]

Each round runs, one after another and never at once, `inception.benchmark` and the reference for train and then for
eval, all on the published GoogLeNet in float32; it prints every run's images/s, then per mode the medians and their
ratio (this project / PyTorch). docs/performance.md records what it printed.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def images_per_second(cmd) -> float:
  """Runs `cmd` in the repository and returns the X of its `images/s: X` line."""
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
  found = re.findall(r'^images/s: ([0-9.]+)$', out.stdout, re.M)
  if out.returncode or not found:
    raise SystemExit(f'{" ".join(cmd)} failed (exit {out.returncode}):\n{out.stdout[-2000:]}{out.stderr[-2000:]}')
  return float(found[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--torch-python', required=True, help='A Python interpreter with torch installed.')
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--image-size', type=int, default=224)
  parser.add_argument('--train-steps', type=int, default=3)
  parser.add_argument('--eval-steps', type=int, default=5)
  args = parser.parse_args()

  shape = [f'--batch={args.batch}', f'--image-size={args.image_size}']
  results = {(mode, who): [] for mode in ('train', 'eval') for who in ('inception', 'pytorch')}
  for r in range(args.rounds):
    for mode, steps in (('train', args.train_steps), ('eval', args.eval_steps)):
      common = [f'--mode={mode}', f'--steps={steps}', '--warmup=1', *shape]
      runs = {
          'inception': [sys.executable, '-m', 'inception.benchmark', '--config=configs/googlenet.py', *common],
          'pytorch': [args.torch_python, 'benchmarks/pytorch_googlenet.py', *common],
      }
      for who, cmd in runs.items():
        results[mode, who].append(images_per_second(cmd))
        print(f'round {r + 1} {mode:5s} {who:9s} {results[mode, who][-1]:8.2f} images/s', flush=True)
  for mode in ('train', 'eval'):
    ours, theirs = (statistics.median(results[mode, who]) for who in ('inception', 'pytorch'))
    print(f'{mode}: inception {ours:.2f} images/s, pytorch {theirs:.2f} images/s, ratio {ours / theirs:.2f}x')


if __name__ == '__main__':
  main()

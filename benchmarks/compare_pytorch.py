"""This project's train step, eval step and input pipeline against PyTorch's (benchmarks/pytorch_googlenet.py,
benchmarks/pil_input.py), alternating runs:

  python benchmarks/compare_pytorch.py --torch-python=/path/to/python-with-torch [--rounds=2] [--batch=32] \
      [--image-size=224] [--train-steps=3] [--eval-steps=5] [--modes=train,eval,input] \
      [--data=../shared/data/caltech101] [--input-steps=100]

Each round runs, one after another and never at once, `inception.benchmark` and the reference for each mode: train
and eval on the published GoogLeNet in float32; input on the training crops of the `--data` folder, where PyTorch's
side is PIL in DataLoader workers (one per host core) twice, with the colour distortions on the host (what a PIL
pipeline must do) and without them (only this project's host part). It prints every run's images/s, then per mode
the medians and their ratio (this project / PyTorch). docs/performance.md records what it printed.

Both sides run with the same host memory settings: where this project's commands restart with huge pages
(inception/host_memory.py), the PyTorch runs get the same `GLIBC_TUNABLES`; `--torch-env=default` leaves PyTorch's
environment as it is, to measure what the setting buys it.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys

from inception import host_memory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def images_per_second(cmd, env=None) -> float:
  """Runs `cmd` in the repository (in `env`, default this one's) and returns the X of its `images/s: X` line."""
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
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
  parser.add_argument('--modes', default='train,eval', help='Comma-separated: train, eval, input.')
  parser.add_argument('--data', default='../shared/data/caltech101', help='input: the image folder to read.')
  parser.add_argument('--input-steps', type=int, default=100, help='input: timed batches per run.')
  parser.add_argument('--torch-env', default='same', choices=['same', 'default'],
                      help='same: the reference runs get the host memory settings this project restarts with.')
  args = parser.parse_args()

  reference_env = dict(os.environ)
  if args.torch_env == 'same' and host_memory.would_restart():
    reference_env['GLIBC_TUNABLES'] = host_memory.tunables_with_huge_pages(os.environ)
  print(f'reference runs: GLIBC_TUNABLES={reference_env.get("GLIBC_TUNABLES", "")!r}', flush=True)

  shape = [f'--batch={args.batch}', f'--image-size={args.image_size}']
  workers = f'--workers={len(os.sched_getaffinity(0))}'
  runs = {}
  for mode in args.modes.split(','):
    if mode == 'input':
      common = [f'--steps={args.input_steps}', '--warmup=5', f'--data={args.data}', *shape]
      pil = [args.torch_python, 'benchmarks/pil_input.py', workers, *common]
      runs['input'] = {
          'inception': [sys.executable, '-m', 'inception.benchmark', '--config=configs/googlenet.py:mini',
                        '--mode=input', *common],
          'pil, distortions on the host': [*pil, '--distort'],
          'pil, no distortions': pil,
      }
    elif mode in ('train', 'eval'):
      steps = args.train_steps if mode == 'train' else args.eval_steps
      common = [f'--mode={mode}', f'--steps={steps}', '--warmup=1', *shape]
      runs[mode] = {
          'inception': [sys.executable, '-m', 'inception.benchmark', '--config=configs/googlenet.py', *common],
          'pytorch': [args.torch_python, 'benchmarks/pytorch_googlenet.py', *common],
      }
    else:
      parser.error(f'--modes: unknown mode {mode!r}; use train, eval, input.')
  results = {(mode, who): [] for mode, cmds in runs.items() for who in cmds}
  for r in range(args.rounds):
    for mode, cmds in runs.items():
      for who, cmd in cmds.items():
        results[mode, who].append(images_per_second(cmd, None if who == 'inception' else reference_env))
        print(f'round {r + 1} {mode:5s} {who:29s} {results[mode, who][-1]:8.2f} images/s', flush=True)
  for mode, cmds in runs.items():
    ours = statistics.median(results[mode, 'inception'])
    for who in list(cmds)[1:]:
      theirs = statistics.median(results[mode, who])
      print(f'{mode}: inception {ours:.2f} images/s, {who} {theirs:.2f} images/s, ratio {ours / theirs:.2f}x')


if __name__ == '__main__':
  main()

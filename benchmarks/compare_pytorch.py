"""This project's train step, eval step and input pipeline against PyTorch's (benchmarks/pytorch_googlenet.py,
benchmarks/pil_input.py), alternating runs:

  python benchmarks/compare_pytorch.py --torch-python=/path/to/python-with-torch [--rounds=2] [--batch=32] \
      [--image-size=224] [--train-steps=3] [--eval-steps=5] [--modes=train,eval,input] \
      [--data=../shared/data/caltech101] [--input-steps=100] [--processes=2]

Each round runs, one after another and never at once, `inception.benchmark` and the reference for each mode: train
and eval on the published GoogLeNet in float32; input on the training crops of the `--data` folder, where PyTorch's
side is PIL in DataLoader workers (one per host core) twice, with the colour distortions on the host (what a PIL
pipeline must do) and without them (only this project's host part). It prints every run's images/s, then per mode
the medians and their ratio (this project / PyTorch). docs/performance.md records what it printed.

`--processes=P` (train and eval) adds each side run as P processes, each pinned to its own share of the cores with
batch/P: this project through `launch.local --pin_cores` (one job, one global batch), PyTorch as P independent
copies at once (their images/s summed; no gradient exchange, so its train figure is an upper bound).

Both sides run with the same host memory settings: the PyTorch runs get the variables this project's commands
restart with (inception/host_memory.py: oneTBB's malloc preloaded, glibc's huge pages), so that an allocator's gain
is not counted as a framework's; `--torch-env=default` leaves PyTorch's environment as it is, to measure what the
settings buy it.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # launch/ is a folder of the repository, not an installed package

from inception import host_memory  # pylint: disable=wrong-import-position
from launch import local  # pylint: disable=wrong-import-position


def images_per_second(cmd, env=None) -> float:
  """Runs `cmd` in the repository (in `env`, default this one's) and returns the X of its `images/s: X` line."""
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
  found = re.findall(r'^images/s: ([0-9.]+)$', out.stdout, re.M)
  if out.returncode or not found:
    raise SystemExit(f'{" ".join(cmd)} failed (exit {out.returncode}):\n{out.stdout[-2000:]}{out.stderr[-2000:]}')
  return float(found[-1])


def parallel_images_per_second(cmds, env=None) -> float:
  """Runs `cmds` at once (each `taskset`-pinned by the caller) and returns the sum of their `images/s: X`."""
  procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
           for cmd in cmds]
  total = 0.0
  for cmd, proc in zip(cmds, procs):
    out, err = proc.communicate()
    found = re.findall(r'^images/s: ([0-9.]+)$', out, re.M)
    if proc.returncode or not found:
      raise SystemExit(f'{" ".join(cmd)} failed (exit {proc.returncode}):\n{out[-2000:]}{err[-2000:]}')
    total += float(found[-1])
  return total


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
  parser.add_argument('--processes', type=int, default=1,
                      help='train / eval: also run each side as this many core-pinned processes, batch / P each.')
  parser.add_argument('--torch-env', default='same', choices=['same', 'default'],
                      help='same: the reference runs get the host memory settings this project restarts with '
                           '(its malloc and huge pages).')
  args = parser.parse_args()

  reference_env = dict(os.environ)
  if args.torch_env == 'same':
    reference_env.update(host_memory.restart_settings())
  shown = ('LD_PRELOAD', host_memory.TBB_KEEP_FROM, 'GLIBC_TUNABLES')
  print('reference runs: ' + ' '.join(f'{k}={reference_env.get(k, "")!r}' for k in shown), flush=True)

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
      if args.processes > 1:
        p = args.processes
        if args.batch % p:
          parser.error(f'--batch={args.batch} does not split over --processes={p}.')
        runs[mode][f'inception, {p} processes'] = [  # the processes' logs go to a temporary workdir
            sys.executable, '-m', 'launch.local', '--module=inception.benchmark', f'--num_processes={p}', '--pin_cores',
            '--', '--config=configs/googlenet.py', f'--config.workdir={tempfile.mkdtemp(prefix="compare_pytorch_")}',
            *common]
        own = [f'--mode={mode}', f'--steps={steps}', '--warmup=1', f'--batch={args.batch // p}',
               f'--image-size={args.image_size}']
        runs[mode][f'pytorch, {p} processes'] = [
            ['taskset', '-c', ','.join(map(str, cores)), args.torch_python, 'benchmarks/pytorch_googlenet.py', *own]
            for cores in local.core_shares(p)]
    else:
      parser.error(f'--modes: unknown mode {mode!r}; use train, eval, input.')
  results = {(mode, who): [] for mode, cmds in runs.items() for who in cmds}
  copies_env = dict(reference_env, OMP_NUM_THREADS=str(len(local.core_shares(args.processes)[0])))
  for r in range(args.rounds):
    for mode, cmds in runs.items():
      for who, cmd in cmds.items():
        if who.startswith('inception'):
          results[mode, who].append(images_per_second(cmd))
        elif isinstance(cmd[0], list):  # P pinned copies at once, each with its share's threads
          results[mode, who].append(parallel_images_per_second(cmd, copies_env))
        else:
          results[mode, who].append(images_per_second(cmd, reference_env))
        print(f'round {r + 1} {mode:5s} {who:29s} {results[mode, who][-1]:8.2f} images/s', flush=True)
  for mode, cmds in runs.items():
    for us in (who for who in cmds if who.startswith('inception')):
      ours = statistics.median(results[mode, us])
      for who in (who for who in cmds if not who.startswith('inception')):
        theirs = statistics.median(results[mode, who])
        print(f'{mode}: {us} {ours:.2f} images/s, {who} {theirs:.2f} images/s, ratio {ours / theirs:.2f}x')


if __name__ == '__main__':
  main()

"""Training on a Cloud TPU VM slice (e.g. v4-32: 4 hosts x 4 chips) through gcloud: create, setup, run, watch, stop.

A v4-32 end to end (every command accepts --dry_run, which prints the gcloud commands instead of running them):

  python -m launch.tpu_vm create --name=goog --zone=us-central2-b --accelerator_type=v4-32 --spot
  python -m launch.tpu_vm setup --name=goog --zone=us-central2-b
  python -m launch.tpu_vm run --name=goog --zone=us-central2-b --workdir=gs://BUCKET/runs/googlenet -- \
      --config=configs/googlenet.py --config.data.tfds_data_dir=gs://BUCKET/tensorflow_datasets
  python -m launch.tpu_vm watch --name=goog --zone=us-central2-b   # worker 0's log; Ctrl-C stops watching only
  python -m launch.tpu_vm stop --name=goog --zone=us-central2-b    # SIGTERM: the run saves a checkpoint and ends
  python -m launch.tpu_vm delete --name=goog --zone=us-central2-b

`all` is create + setup + run (same flags). `create` does nothing if the slice exists; a slice found PREEMPTED or
TERMINATED (spot, queued) is deleted and created again, so after a preemption `all` brings the run back and it resumes
from its last checkpoint in the workdir. --version is the TPU VM runtime: tpu-ubuntu2204-base for v4,
v2-alpha-tpuv5-lite for v5e, v2-alpha-tpuv5 for v5p, v2-alpha-tpuv6e for v6e. --project=P goes to every gcloud command.

setup ships this checkout's HEAD (`git archive`, copied with gcloud scp; uncommitted changes are not shipped) or, with
--repo=GIT_URL --ref=COMMIT, clones that commit on every worker, into ~/inception; installs make and python3.11 (the
lock is for CPython 3.11; the images have 3.10) if missing; then `make install install-tpu`: the locked versions plus
the TPU build of the locked jax. Run `stop` before `setup` on a slice that is training.

run starts `.venv/bin/python -m inception.main --config=... --config.workdir=WORKDIR --distributed ARGS` on every
worker (ARGS: what follows `--`; --config defaults to configs/googlenet.py), detached (setsid nohup: a dropped ssh does
not stop it), output appended to ~/inception/logs/run.log on each worker. The workdir must be gs://: every host writes
the same checkpoints. jax.distributed.initialize() finds the other workers from the TPU metadata.
The relaunch loop: exit code 75 (the run was sent SIGTERM, saved a checkpoint and asks to be re-run) relaunches the
same command, which resumes, after 30 s; the loop ends when the run exits 0 (done) or with any other code (a failure,
not retried), after --max_relaunches relaunches, or on `stop` (the loop is signalled with the run, so it does not
relaunch). A preempted slice loses its VMs and their loops: `all` again, as above.

ImageNet on GCS (every worker reads it): prepare TFDS imagenet2012 once on any machine (put ILSVRC2012_img_train.tar
and ILSVRC2012_img_val.tar in ~/tensorflow_datasets/downloads/manual/, `tfds build imagenet2012`), copy it:
`gcloud storage cp -r ~/tensorflow_datasets/imagenet2012 gs://BUCKET/tensorflow_datasets/`, and pass
`--config.data.tfds_data_dir=gs://BUCKET/tensorflow_datasets`. Use a bucket in the slice's region.
"""
import os
import shlex
import subprocess
import sys
import tempfile
from typing import List, Optional, Sequence, Tuple

from inception import command
from inception.command import EXIT_PREEMPTED  # the run saved a checkpoint and asks to be re-run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACTIONS = ('create', 'setup', 'run', 'watch', 'stop', 'delete', 'all')
REMOTE_DIR = 'inception'  # on each worker, under the home directory
REMOTE_PYTHON = 'python3.11'
LOG, PIDFILE = 'logs/run.log', 'logs/run.pid'  # in REMOTE_DIR, on each worker
DEFAULT_CONFIG = 'configs/googlenet.py'
RELAUNCH_DELAY_S = 30
STOP_WAIT_S = 300  # `stop` waits this long for the checkpoint before SIGKILL
GONE_STATES = ('PREEMPTED', 'TERMINATED')  # a slice in these states is recreated by `create`


def split_argv(argv: Sequence[str]) -> Tuple[List[str], List[str]]:
  """(the launcher's own arguments, the arguments of inception.main after `--`)."""
  argv = list(argv)
  if '--' not in argv:
    return argv, []
  i = argv.index('--')
  return argv[:i], argv[i + 1:]


def config_and_overrides(args: Sequence[str]) -> Tuple[str, List[str]]:
  """Splits inception.main's ARGS (command.parse_config_args) into the --config spec (default configs/googlenet.py)
  and the rest: the overrides, then the other arguments. The workdir is the launcher's --workdir, never an override."""
  spec, overrides, rest = command.parse_config_args(args)
  if any(key == 'workdir' for key, _ in overrides):
    raise SystemExit('launch: pass the workdir as --workdir=... to the launcher, not --config.workdir after --.')
  return spec or DEFAULT_CONFIG, [*command.override_args(overrides), *rest]


def check_workdir(workdir: Optional[str]) -> str:
  """The workdir, if it is on GCS; every worker writes the same checkpoints and reads them back on resume."""
  why = ('every worker of the slice writes the same checkpoints and reads them back on resume, so all hosts must '
         'share it')
  if not workdir:
    raise SystemExit(f'launch.tpu_vm: run needs --workdir=gs://BUCKET/...: {why}.')
  if not workdir.startswith('gs://'):
    raise SystemExit(f'launch.tpu_vm: --workdir={workdir} refused: not a gs:// path. {why[0].upper()}{why[1:]} '
                     f'(a local path is a different directory on each host): use gs://BUCKET/runs/NAME.')
  return workdir


def gcloud(opts, verb: str, *rest: str) -> List[str]:
  """`gcloud compute tpus tpu-vm VERB NAME --zone=ZONE [--project=P] REST`."""
  project = [f'--project={opts.project}'] if opts.project else []
  return ['gcloud', 'compute', 'tpus', 'tpu-vm', verb, opts.name, f'--zone={opts.zone}', *project, *rest]


def describe_command(opts) -> List[str]:
  return gcloud(opts, 'describe', '--format=value(state)')


def create_command(opts) -> List[str]:
  return gcloud(opts, 'create', f'--accelerator-type={opts.accelerator_type}', f'--version={opts.version}',
                *(['--spot'] if opts.spot else []))


def delete_command(opts, quiet: bool = False) -> List[str]:
  return gcloud(opts, 'delete', *(['--quiet'] if quiet else []))


def ssh_command(opts, script: str, worker: str = 'all') -> List[str]:
  return gcloud(opts, 'ssh', f'--worker={worker}', f'--command={script}')


def scp_command(opts, local: str, remote: str) -> List[str]:
  project = [f'--project={opts.project}'] if opts.project else []
  return ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp', local, f'{opts.name}:{remote}', f'--zone={opts.zone}',
          *project, '--worker=all']


def archive_command(tarball: str) -> List[str]:
  return ['git', '-C', REPO, 'archive', '--format=tar.gz', f'--output={tarball}', 'HEAD']


def prerequisites_script(python: str = REMOTE_PYTHON) -> str:
  """Installs make, git and `python` with venv through apt when one is missing (TPU VM images are Ubuntu 22.04)."""
  missing = ' || '.join([*(f'! command -v {c} >/dev/null' for c in ('make', 'git', python)),
                         f'! dpkg -s {python}-venv >/dev/null 2>&1'])
  return (f'if {missing}; then sudo apt-get -qq update && sudo DEBIAN_FRONTEND=noninteractive apt-get -qq -y '
          f'-o DPkg::Lock::Timeout=600 install make git {python} {python}-venv; fi')


def setup_script(repo: Optional[str] = None, ref: Optional[str] = None, remote_dir: str = REMOTE_DIR) -> str:
  """Puts the code in ~/remote_dir (the shipped tarball, or `repo` at `ref`) and installs it."""
  d = shlex.quote(remote_dir)
  if repo:
    code = [f'if [ ! -d {d}/.git ]; then rm -rf {d}; git clone -q {shlex.quote(repo)} {d}; fi',
            f'git -C {d} fetch -q --tags origin', f'git -C {d} checkout -q --force --detach {shlex.quote(ref)}']
  else:  # new code, same .venv and logs (-m: the files are new to make, so `make install` re-syncs .venv to the lock)
    code = [f'mkdir -p {d}', f'find {d} -mindepth 1 -maxdepth 1 ! -name .venv ! -name logs -exec rm -rf {{}} +',
            f'tar -xzmf {d}.tar.gz -C {d}', f'rm {d}.tar.gz']
  return '; '.join(['set -e', prerequisites_script(), *code, f'cd {d}',
                    f'make install install-tpu PYTHON={REMOTE_PYTHON}'])


def train_command(workdir: str, args: Sequence[str]) -> List[str]:
  config, rest = config_and_overrides(args)
  return ['.venv/bin/python', '-m', 'inception.main', f'--config={config}', f'--config.workdir={workdir}',
          '--distributed', *rest]


def loop_script(command: Sequence[str], max_relaunches: int, delay_s: int = RELAUNCH_DELAY_S) -> str:
  """Bash, run in REMOTE_DIR: `command` until it exits other than 75, at most 1 + max_relaunches times."""
  tag, cmd = '[launch.tpu_vm] $(date -u +%FT%TZ) $(hostname)', shlex.join(command)
  return '; '.join([
      f'echo $$ > {PIDFILE}', 'n=0', 'while true', f'do echo "{tag} start (relaunch $n)"', cmd, 'code=$?',
      f'if [ $code -ne {EXIT_PREEMPTED} ]; then echo "{tag} exited with code $code: not relaunched"; exit $code; fi',
      f'if [ $n -ge {max_relaunches} ]; then echo "{tag} exit {EXIT_PREEMPTED} after {max_relaunches} relaunches: '
      f'giving up"; exit {EXIT_PREEMPTED}; fi',
      'n=$((n + 1))', f'echo "{tag} preempted (exit {EXIT_PREEMPTED}): relaunching in {delay_s} s"',
      f'sleep {delay_s}', 'done'])


def start_script(loop: str, remote_dir: str = REMOTE_DIR) -> str:
  """Starts `loop` in its own session (immune to the ssh session ending) unless a run is going; returns at once."""
  return '; '.join([
      'set -e', f'cd {shlex.quote(remote_dir)}', 'mkdir -p logs',
      f'if [ -f {PIDFILE} ] && kill -0 -- "-$(cat {PIDFILE})" 2>/dev/null; then echo "$(hostname): a run is going '
      f'(process group $(cat {PIDFILE})); stop it first" >&2; exit 1; fi',
      f'setsid nohup bash -c {shlex.quote(loop)} >> {LOG} 2>&1 < /dev/null & echo "$(hostname): started, log '
      f'~/{remote_dir}/{LOG}"'])


def stop_script(remote_dir: str = REMOTE_DIR, wait_s: int = STOP_WAIT_S) -> str:
  """SIGTERM to the loop's process group (the loop dies, the run saves and exits), SIGKILL after `wait_s`."""
  alive = 'kill -0 -- "-$pid" 2>/dev/null'
  return '; '.join([
      f'cd {shlex.quote(remote_dir)} 2>/dev/null || exit 0', f'pid=$(cat {PIDFILE} 2>/dev/null || true)',
      f'if [ -z "$pid" ] || ! {alive}; then echo "$(hostname): no run going"; exit 0; fi',
      'echo "$(hostname): stopping run $pid (SIGTERM: it saves a checkpoint)"', 'kill -TERM -- "-$pid"',
      f'for i in $(seq {wait_s}); do {alive} || break; sleep 1; done',
      f'if {alive}; then echo "$(hostname): still running after {wait_s} s: SIGKILL"; kill -KILL -- "-$pid"; fi',
      'echo "$(hostname): stopped"'])


def watch_script(remote_dir: str = REMOTE_DIR) -> str:
  return f'tail -n 100 -F {shlex.quote(remote_dir)}/{LOG}'


def execute(cmd: Sequence[str], dry_run: bool) -> None:
  """Runs `cmd` (an error raises), or prints it, one line, with --dry_run."""
  if dry_run:
    print(shlex.join(cmd), flush=True)
  else:
    subprocess.run(cmd, check=True)


def probe_state(cmd: Sequence[str], dry_run: bool) -> Optional[str]:
  """The slice's state, None if there is none (dry run: printed, as if there were none)."""
  if dry_run:
    execute(cmd, dry_run)
    return None
  result = subprocess.run(cmd, capture_output=True, text=True)
  return (result.stdout.strip() or 'UNKNOWN') if result.returncode == 0 else None


def create(opts) -> None:
  state = probe_state(describe_command(opts), opts.dry_run)
  if state and state not in GONE_STATES:
    print(f'launch.tpu_vm: {opts.name} exists ({state}); not creating it.', file=sys.stderr)
    return
  if state:
    print(f'launch.tpu_vm: {opts.name} is {state}: deleting and creating it again.', file=sys.stderr)
    execute(delete_command(opts, quiet=True), opts.dry_run)
  execute(create_command(opts), opts.dry_run)


def setup(opts) -> None:
  if not opts.repo:
    dirty = subprocess.run(['git', '-C', REPO, 'status', '--porcelain', '--untracked-files=no'],
                           capture_output=True, text=True).stdout.strip()
    if dirty:
      print('launch.tpu_vm: uncommitted changes are not shipped (git archive HEAD); commit them first.',
            file=sys.stderr)
    tarball = os.path.join(tempfile.gettempdir(), f'{opts.name}-{REMOTE_DIR}.tar.gz')
    execute(archive_command(tarball), opts.dry_run)
    execute(scp_command(opts, tarball, f'{REMOTE_DIR}.tar.gz'), opts.dry_run)
  execute(ssh_command(opts, setup_script(opts.repo, opts.ref)), opts.dry_run)


def run(opts, args: Sequence[str]) -> None:
  loop = loop_script(train_command(check_workdir(opts.workdir), args), opts.max_relaunches)
  execute(ssh_command(opts, start_script(loop)), opts.dry_run)


def parse(argv: Sequence[str]):
  parser = command.ArgumentParser(description=__doc__.split('\n\n')[0], usage='python -m launch.tpu_vm {'
                                   + ','.join(ACTIONS) + '} --name=NAME --zone=ZONE [options] [-- ARGS]')
  parser.add_argument('action', choices=ACTIONS)
  parser.add_argument('--name', required=True, help='the TPU VM slice')
  parser.add_argument('--zone', required=True, help='e.g. us-central2-b')
  parser.add_argument('--accelerator_type', default='v4-32')
  parser.add_argument('--version', default='tpu-ubuntu2204-base', help='TPU VM runtime version')
  parser.add_argument('--project', default=None, help='default: gcloud\'s configured project')
  parser.add_argument('--spot', action='store_true', help='create a spot (preemptible) slice')
  parser.add_argument('--repo', default=None, help='setup: clone this git URL on the workers (with --ref)')
  parser.add_argument('--ref', default=None, help='with --repo: the commit (or tag) to check out')
  parser.add_argument('--workdir', default=None, help='run: gs://BUCKET/... shared by all workers')
  parser.add_argument('--max_relaunches', type=int, default=100, help='run: relaunches after exit code 75')
  parser.add_argument('--dry_run', action='store_true', help='print the commands instead of running them')
  own, args = split_argv(argv)
  opts = parser.parse_args(own)
  if bool(opts.repo) != bool(opts.ref):
    parser.error('--repo and --ref go together (a clone at an exact commit).')
  return opts, args


def main(argv: Optional[Sequence[str]] = None) -> int:
  opts, args = parse(sys.argv[1:] if argv is None else argv)
  if opts.action in ('run', 'all'):
    train_command(check_workdir(opts.workdir), args)  # refuse a bad workdir or ARGS before creating anything
  steps = {'create': [create], 'setup': [setup], 'run': [lambda o: run(o, args)],
           'watch': [lambda o: execute(ssh_command(o, watch_script(), worker='0'), o.dry_run)],
           'stop': [lambda o: execute(ssh_command(o, stop_script()), o.dry_run)],
           'delete': [lambda o: execute(delete_command(o), o.dry_run)],
           'all': [create, setup, lambda o: run(o, args)]}[opts.action]
  try:
    for step in steps:
      step(opts)
  except subprocess.CalledProcessError as e:
    print(f'launch.tpu_vm: exit code {e.returncode}: {shlex.join(e.cmd)}', file=sys.stderr)
    return e.returncode or 1
  except KeyboardInterrupt:
    return 130
  return 0


if __name__ == '__main__':
  command.run_script(main)

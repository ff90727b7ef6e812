"""A one-node SLURM cluster on this machine (Debian's slurm-wlm, issue 32): munged with its own key and socket,
slurmctld and slurmd as root in the foreground, everything on 127.0.0.1, from a slurm.conf in a temporary folder that
the clients find through SLURM_CONF. GPUs are generic resources backed by character devices (mknod), so
`--gpus-per-node` schedules; the jobs run on CPU.

  python -m tests.services.slurm     # starts one, prints `export SLURM_CONF=...`, stops it on Ctrl-C

The fixture `slurm_cluster` (session scope) skips through tests.services.unavailable when not root or the packages
are absent (`make install-test-services`).
"""
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

import pytest

DAEMONS = ('munged', 'slurmctld', 'slurmd')
CLIENTS = ('sbatch', 'srun', 'scontrol', 'scancel', 'sinfo', 'squeue')
NODE = 'localhost'  # the node's name is what JAX's SLURM detection connects to: it resolves to 127.0.0.1
GPUS = 2  # generic resources on the node (character devices); the jobs see CUDA_VISIBLE_DEVICES and run on CPU
START_TIMEOUT_S = 60

# Defaults hold a requeued job ~2.5 min (the credential's lifetime, the scheduler's interval); no cgroups, no systemd.
SLURM_CONF = """\
ClusterName=inception-test
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket},cred_expire=5
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=sched_interval=1
JobRequeue=1
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
FirstJobId={first_job_id}
GresTypes=gpu
NodeName={node} NodeAddr=127.0.0.1 {hardware} Gres=gpu:{gpus} State=UNKNOWN
PartitionName=test Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def node_hardware() -> str:
  """This machine's CPUs, boards, sockets, cores and threads as slurmd sees them (`slurmd -C`), without its memory:
  a node declared with other figures would be drained."""
  line = subprocess.run(['slurmd', '-C'], capture_output=True, text=True, check=True).stdout.splitlines()[0]
  return ' '.join(f for f in line.split() if f.split('=')[0] in ('CPUs', 'Boards', 'SocketsPerBoard',
                                                                 'CoresPerSocket', 'ThreadsPerCore'))


class Cluster:
  """The daemons and their files under `root`; `env` is what a client needs (SLURM_CONF)."""

  def __init__(self, root: str):
    self.root = root
    self.conf = os.path.join(root, 'slurm.conf')
    self.env = {**os.environ, 'SLURM_CONF': self.conf}
    self.procs: Dict[str, subprocess.Popen] = {}

  def start(self) -> 'Cluster':
    for sub in ('state', 'spool', 'munge', 'dev'):
      os.makedirs(os.path.join(self.root, sub))
    munge = os.path.join(self.root, 'munge')
    os.chmod(munge, 0o711)  # munged refuses a socket folder others may write to
    key = os.path.join(munge, 'munge.key')
    with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o600), 'wb') as f:
      f.write(os.urandom(1024))
    socket_path = os.path.join(munge, 'munge.socket')
    self._daemon('munged', ['munged', '--foreground', '--force', f'--socket={socket_path}', f'--key-file={key}',
                            f'--pid-file={munge}/munged.pid', f'--log-file={munge}/munged.log',
                            f'--seed-file={munge}/munged.seed'])
    self._wait(lambda: os.path.exists(socket_path), 'munged', f'{munge}/munged.log')
    devices = []
    for i in range(GPUS):  # the GPU generic resources' device files: slurmd only checks they exist
      devices.append(os.path.join(self.root, 'dev', f'nvidia{i}'))
      os.mknod(devices[-1], 0o600 | 0o020000, os.makedev(195, i))
    with open(os.path.join(self.root, 'gres.conf'), 'w') as f:
      f.write(f'NodeName={NODE} Name=gpu File={self.root}/dev/nvidia[0-{GPUS - 1}]\n')
    with open(self.conf, 'w') as f:
      f.write(SLURM_CONF.format(node=NODE, root=self.root, munge_socket=socket_path, ctld_port=free_port(),
                                slurmd_port=free_port(), hardware=node_hardware(), gpus=GPUS,
                                # JAX's SLURM detection takes its coordinator port from the job id: clusters that
                                # run side by side (other test workers) start their ids apart.
                                first_job_id=random.randrange(1, 4096) * 1000))
    self._daemon('slurmctld', ['slurmctld', '-D', '-f', self.conf])
    self._daemon('slurmd', ['slurmd', '-D', '-N', NODE, '-f', self.conf])
    self._wait(lambda: self.node_state() == 'idle', 'the node', os.path.join(self.root, 'slurmd.log'))
    return self

  def _daemon(self, name: str, cmd: List[str]) -> None:
    log = open(os.path.join(self.root, f'{name}.out'), 'ab')
    self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

  def _wait(self, ready, what: str, log: str) -> None:
    deadline = time.time() + START_TIMEOUT_S
    while not ready():
      dead = [name for name, p in self.procs.items() if p.poll() is not None]
      if dead or time.time() > deadline:
        raise RuntimeError(f'SLURM test cluster: {what} did not start ({", ".join(dead) or "time-out"}): see '
                           f'{log} and {self.root}/*.out')
      time.sleep(0.1)

  def run(self, *cmd: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    """A client command against this cluster, `env` added to its environment."""
    return subprocess.run(cmd, env={**self.env, **env}, capture_output=True, text=True, check=check, timeout=60)

  def node_state(self) -> str:
    r = self.run('sinfo', '--noheader', '--Node', '--format=%T', check=False)
    return r.stdout.strip() if r.returncode == 0 else ''

  def job(self, job_id: str) -> Dict[str, str]:
    """`scontrol show job` as a dict (JobState, ExitCode, Restarts, StdOut, ...); {} once the job is forgotten."""
    r = self.run('scontrol', '--oneliner', 'show', 'job', job_id, check=False)
    return dict(re.findall(r'([\w/]+)=(\S*)', r.stdout)) if r.returncode == 0 else {}

  def wait_for_job(self, job_id: str, states=('COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL'),
                   timeout: float = 600) -> Dict[str, str]:
    deadline = time.time() + timeout
    while time.time() < deadline:
      info = self.job(job_id)
      if info.get('JobState') in states:
        return info
      time.sleep(0.5)
    raise TimeoutError(f'job {job_id} not in {states} after {timeout} s: {self.job(job_id)}')

  def stop(self) -> None:
    """Cancels what still runs, then ends the daemons (slurmd, slurmctld, munged), each within seconds."""
    if self.procs.get('slurmctld') and self.procs['slurmctld'].poll() is None:
      self.run('scancel', '--partition=test', '--full', '--signal=KILL', check=False)  # what runs, at once
      self.run('scancel', '--partition=test', check=False)  # and what waits
      deadline = time.time() + 30
      while self.run('squeue', '--noheader', check=False).stdout.strip() and time.time() < deadline:
        time.sleep(0.2)
    for name in reversed(DAEMONS):
      proc = self.procs.get(name)
      if proc is None or proc.poll() is not None:
        continue
      proc.terminate()
      try:
        proc.wait(timeout=15)
      except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def missing() -> Optional[str]:
  """Why the cluster cannot run here, or None."""
  if os.geteuid() != 0:
    return 'the SLURM test cluster runs its daemons as root (SlurmUser=root); this user is not root'
  absent = [name for name in DAEMONS + CLIENTS if shutil.which(name) is None]
  if absent:
    return f'the SLURM test cluster needs {", ".join(absent)} (Debian: slurmctld slurmd slurm-client munge)'
  return None


@pytest.fixture(scope='session')
def slurm_cluster(tmp_path_factory):
  """A running one-node cluster for the test session; stopped at its end."""
  from tests.services import unavailable  # pylint: disable=import-outside-toplevel
  reason = missing()
  if reason:
    unavailable(reason)
  cluster = Cluster(str(tmp_path_factory.mktemp('slurm')))
  try:
    yield cluster.start()
  finally:
    cluster.stop()


def main() -> int:
  reason = missing()
  if reason:
    sys.exit(f'tests.services.slurm: {reason}.')
  for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, signal.default_int_handler)
  cluster = Cluster(tempfile.mkdtemp(prefix='slurm-'))
  try:
    cluster.start()
    print(f'export SLURM_CONF={cluster.conf}   # in another shell; Ctrl-C here stops the cluster', flush=True)
    while True:
      time.sleep(3600)
  except KeyboardInterrupt:
    return 0
  finally:
    cluster.stop()


if __name__ == '__main__':
  sys.exit(main())

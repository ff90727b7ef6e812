"""A local stand-in for Cloud Storage: `gs://BUCKET/KEY` is the file ROOT/BUCKET/KEY.

A `gs://` workdir reaches storage by two routes, and the stand-in takes over both below the project's code:
- the path library (etils.epath), which every config, class-name, metrics and result file goes through: its gs://
  backend (tf.io.gfile when TensorFlow is installed, else fsspec) is replaced by one that maps to ROOT;
- the checkpoint arrays, which orbax hands to TensorStore's GCS kvstore: that spec is made a local file kvstore at
  the same place; and orbax's question to the storage client (google-cloud-storage) whether the bucket has a
  hierarchical namespace, answered no (a plain bucket).
So a command given `gs://bucket/run` runs the same code as on a real bucket down to those two calls, and anything that
bypasses the path library (the builtin `open`, `os.path`, `pathlib`) finds no such file. What it does not model: GCS's
lack of real folders and atomic renames, latency, and errors (a real emulator covers those).

In a test: `with local_gcs.serve(tmp_path): ...`. For a command in a subprocess, `command(root, module, args)` is the
argument list of a Python that installs the stand-in and runs `python -m module args` (a restart with host settings
re-runs the same `-c` code, so it installs again).
"""
import contextlib
import os
import sys
import types
from typing import List, Sequence
from unittest import mock

from etils.epath import backend as backend_lib
from etils.epath import gpath

PREFIX = 'gs://'


class LocalBucketBackend(backend_lib._OsPathBackend):  # pylint: disable=protected-access
  """The os backend, with gs://BUCKET/KEY read and written as ROOT/BUCKET/KEY (local paths pass unchanged)."""

  def __init__(self, root):
    self.root = os.path.abspath(os.fspath(root))

  def local(self, path) -> str:
    path = os.fspath(path)
    return os.path.join(self.root, path[len(PREFIX):]) if path.startswith(PREFIX) else path

  def url(self, path) -> str:
    """The gs:// name of a local path under ROOT (what listings return)."""
    path = os.fspath(path)
    return PREFIX + os.path.relpath(path, self.root) if path.startswith(self.root + os.sep) else path

  def open(self, path, mode):
    return super().open(self.local(path), mode)

  def exists(self, path):
    return super().exists(self.local(path))

  def isdir(self, path):
    return super().isdir(self.local(path))

  def listdir(self, path):
    return super().listdir(self.local(path))

  def glob(self, path):
    return [self.url(p) for p in super().glob(self.local(path))]

  def walk(self, top, *, top_down=True, on_error=None):
    for folder, dirs, files in super().walk(self.local(top), top_down=top_down, on_error=on_error):
      yield self.url(folder), dirs, files

  def makedirs(self, path, *, exist_ok=False, mode=None):
    super().makedirs(self.local(path), exist_ok=exist_ok, mode=mode)

  def mkdir(self, path, *, exist_ok=False, mode=None):
    super().mkdir(self.local(path), exist_ok=exist_ok, mode=mode)

  def rmtree(self, path):
    super().rmtree(self.local(path))

  def remove(self, path):
    super().remove(self.local(path))

  def rename(self, path, dst):
    super().rename(self.local(path), self.local(dst))

  def replace(self, path, dst):
    super().replace(self.local(path), self.local(dst))

  def copy(self, path, dst, overwrite):
    super().copy(self.local(path), self.local(dst), overwrite=overwrite)

  def stat(self, path):
    return super().stat(self.local(path))


@contextlib.contextmanager
def serve(root):
  """gs:// paths served from the folder `root` while the context is open (epath and orbax's TensorStore specs)."""
  from orbax.checkpoint._src.path import gcs_utils  # pylint: disable=import-outside-toplevel
  bucket = LocalBucketBackend(root)

  def kvstore(path: str):
    return {'driver': 'file', 'path': bucket.local(os.fspath(path).rstrip('/'))}

  with contextlib.ExitStack() as stack:
    stack.enter_context(mock.patch.object(backend_lib, 'tf_backend', bucket))  # TensorFlow installed: gfile's place
    stack.enter_context(mock.patch.dict(gpath._PREFIX_TO_BACKEND, {'gs': bucket}))  # pylint: disable=protected-access
    # Copies and renames between a local and a gs:// path go through the gs:// backend, as with the real ones.
    stack.enter_context(mock.patch.object(gpath, '_GCS_BACKENDS', frozenset({bucket})))
    stack.enter_context(mock.patch.object(gpath, '_is_zonal_gcs_bucket', lambda name: False))
    stack.enter_context(mock.patch.object(gcs_utils, 'get_kvstore_for_gcs', kvstore))
    stack.enter_context(mock.patch.object(gcs_utils, 'get_bucket', lambda name: types.SimpleNamespace(name=name)))
    yield bucket


_INSTALLED = []  # the open serve() contexts of install(): held, or collecting them would close them


def install(root) -> None:
  """serve(root) for the rest of this process (a command run under the stand-in)."""
  context = serve(root)
  context.__enter__()  # pylint: disable=unnecessary-dunder-call
  _INSTALLED.append(context)


def command(root, module: str, args: Sequence[str]) -> List[str]:
  """`python -m module args` with gs:// served from `root` (run it from the repository root)."""
  code = (f'from tests import local_gcs; local_gcs.install({os.fspath(root)!r}); import runpy; '
          f'runpy.run_module({module!r}, run_name="__main__", alter_sys=True)')
  return [sys.executable, '-c', code, *args]

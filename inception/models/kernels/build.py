"""Compiles the Winograd kernel library `_winograd.so` beside its sources: `python -m inception.models.kernels.build`.

`make install` runs it. On x86-64 the kernel is built three times (AVX-512, AVX2 + FMA, baseline SSE2) and the library
picks the widest the CPU runs when it loads, so one build serves every node of a cluster that shares the install.
Without a C++ compiler it says so and leaves the library out; models then use XLA's convolutions.
"""
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax.ffi

HERE = Path(__file__).resolve().parent
LIBRARY = HERE / '_winograd.so'
SOURCES = ('winograd_api.h', 'winograd_isa.cc', 'winograd_ffi.cc')
# -std=c++17 (not gnu++17): GCC then does not contract a * b + c into a fused multiply-add behind the source's back.
FLAGS = ('-O3', '-std=c++17', '-fPIC', '-fno-math-errno')
ISA_FLAGS = {'avx512': ('-march=x86-64-v4',), 'avx2': ('-march=x86-64-v3',), 'generic': ()}


def compiler() -> str:
  """The C++ compiler: $CXX, else g++ or c++ on the PATH; '' if there is none."""
  for name in (os.environ.get('CXX'), 'g++', 'c++'):
    if name and shutil.which(name):
      return name
  return ''


def build(out: Path = LIBRARY, cxx: str = '') -> Path:
  """Compiles the ISA builds and the FFI handler and links them into `out` (written atomically, so processes that
  build at once never load half a file). Raises subprocess.CalledProcessError with the compiler's output."""
  cxx = cxx or compiler()
  x86 = platform.machine() in ('x86_64', 'AMD64')
  isas = ('avx512', 'avx2', 'generic') if x86 else ('generic',)
  with tempfile.TemporaryDirectory() as tmp:
    objects = []
    for isa in isas:
      objects.append(Path(tmp, f'{isa}.o'))
      _run([cxx, *FLAGS, *(ISA_FLAGS[isa] if x86 else ()), f'-DWINO_ISA={isa}', '-c', str(HERE / 'winograd_isa.cc'),
            '-o', str(objects[-1])])
    objects.append(Path(tmp, 'ffi.o'))
    _run([cxx, *FLAGS, *(['-DWINO_X86'] if x86 else []), f'-I{jax.ffi.include_dir()}', '-c',
          str(HERE / 'winograd_ffi.cc'), '-o', str(objects[-1])])
    partial = Path(tmp, out.name)
    _run([cxx, '-shared', '-pthread', *map(str, objects), '-o', str(partial)])
    shutil.copy(partial, out.with_suffix('.tmp'))
    os.replace(out.with_suffix('.tmp'), out)
  return out


def _run(command):
  subprocess.run(command, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def main() -> int:
  cxx = compiler()
  if not cxx:
    print('inception: no C++ compiler (g++, c++ or $CXX): the Winograd kernel is not built; 3x3 and 5x5 convolutions '
          'on CPU use XLA\'s (slower). Install g++ and run `python -m inception.models.kernels.build`.', file=sys.stderr)
    return 0
  try:
    path = build(cxx=cxx)
  except subprocess.CalledProcessError as error:
    print(f'inception: building the Winograd kernel failed:\n$ {" ".join(error.cmd)}\n{error.stdout}', file=sys.stderr)
    return 1
  print(f'inception: built {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())

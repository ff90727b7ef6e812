"""Synthetic image folders for the data tests: random JPEGs, unique per seed, in root/<class>/ layouts."""
import pathlib

import numpy as np
import tensorflow as tf


def write_jpeg(path: pathlib.Path, seed: int) -> None:
  """Writes a random (hence unique per seed) JPEG whose size varies with the seed."""
  path.parent.mkdir(parents=True, exist_ok=True)
  shape = (20 + seed % 7 * 4, 28 - seed % 5 * 2, 3)
  pixels = np.random.RandomState(seed).randint(0, 256, shape).astype(np.uint8)
  path.write_bytes(tf.io.encode_jpeg(pixels).numpy())


def make_folder(root: pathlib.Path, counts: dict, start_seed: int = 0) -> None:
  """Writes `counts[class]` JPEGs per class under root/<class>/ (upper-case extension), plus a top-level file that
  is not a class (as the embedded data's LICENSE.md)."""
  seed = start_seed
  for name, count in counts.items():
    for i in range(count):
      write_jpeg(root / name / f'img_{i:03d}.JPG', seed)
      seed += 1
  (root / 'LICENSE.md').write_text('not a class')

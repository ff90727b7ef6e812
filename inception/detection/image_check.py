"""Reading detection images: a file's size, read by PIL before any stage relies on it (a missing file or one that does
not decode is named here, once, instead of failing a later stage mid-run), and its pixels. Paths go through
etils.epath: local or gs://."""
from typing import Iterator, List, Mapping, Sequence, Tuple, TypeVar

from etils import epath
import numpy as np
from PIL import Image

from inception.detection.records import ImageRecord

T = TypeVar('T')


class ImageProblem(Exception):
  """An image that cannot be used; `reason` is 'missing_image' or 'undecodable_image'."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason


def image_size(path: str, decode: bool) -> Tuple[int, int]:
  """(width, height) of the image at `path`; `decode` reads every pixel (catches truncated files), else the header."""
  file = epath.Path(path)
  if not file.is_file():
    raise ImageProblem('missing_image', f'{path}: no such file')
  try:
    with file.open('rb') as f, Image.open(f) as image:
      if decode:
        image.load()
      return image.size
  except Exception as e:  # pylint: disable=broad-except  # PIL raises OSError, SyntaxError, ValueError, bomb errors
    raise ImageProblem('undecodable_image', f'{path}: {type(e).__name__}: {e}') from None


def read_rgb(path) -> np.ndarray:
  """The image at `path` (local or gs://) as uint8 [H, W, 3] RGB; ImageProblem if it is missing or does not decode."""
  path = epath.Path(path)
  if not path.exists():
    raise ImageProblem('missing_image', f'{path}: no such file')
  try:
    with path.open('rb') as f, Image.open(f) as image:
      return np.asarray(image.convert('RGB'))
  except Exception as e:  # pylint: disable=broad-except  # PIL raises OSError, SyntaxError, ValueError, bomb errors
    raise ImageProblem('undecodable_image', f'{path}: {type(e).__name__}: {e}') from None


def read_images(records: Sequence[ImageRecord], items: Mapping[str, T], skipped: List[str]) -> Iterator[
    Tuple[str, np.ndarray, T]]:
  """(image id, pixels, items[image id]) of each record that has an entry in `items` (its proposals, its regions), in
  the records' order; an image that does not read is added to `skipped` as 'id (reason)'."""
  for record in records:
    if record.image_id not in items:
      continue
    try:
      pixels = read_rgb(record.path)
    except ImageProblem as e:
      skipped.append(f'{record.image_id} ({e})')
      continue
    yield record.image_id, pixels, items[record.image_id]

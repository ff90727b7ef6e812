"""An image file's size, read by PIL before any stage relies on it: a missing file or one that does not decode is
named here, once, instead of failing a later stage mid-run. Paths go through etils.epath: local or gs://."""
from typing import Tuple

from etils import epath
from PIL import Image


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

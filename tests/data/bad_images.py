"""A folder holding every kind of file a real image dataset carries, for the bad-input tests.

`make_bad_folder(root)` writes two classes of good JPEGs plus, in class `odd/`: images that are unusual but must train
(grayscale, CMYK, 16-bit PNG, RGBA, palette GIF, BMP, 8x8, 8000x6000, an upper-case extension), files that look like
images but cannot be decoded (empty, truncated, text), and files the listing must leave out (WebP, hidden, text).
"""
import io
import pathlib

import numpy as np
from PIL import Image

GOOD_PER_CLASS = 6
# What must decode (and train), what must fail to decode (skipped and counted), what the listing leaves out.
UNUSUAL = ('gray.jpg', 'gray.png', 'cmyk.jpg', 'deep16.png', 'rgba.png', 'palette.gif', 'plain.bmp', 'tiny8x8.jpg',
           'huge8000x6000.jpg', 'UPPER.JPG')
UNDECODABLE = ('empty.jpg', 'truncated.jpg', 'text.jpg')
LEFT_OUT = {'.webp': 1, 'hidden': 2, '.txt': 1}


def _encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, fmt, **kwargs)
  return buffer.getvalue()


def _noise(size, seed, mode='RGB') -> Image.Image:
  channels = {'RGB': 3, 'RGBA': 4, 'CMYK': 4}.get(mode, 1)
  pixels = np.random.RandomState(seed).randint(0, 256, (size[1], size[0], channels)).astype(np.uint8)
  return Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)


def make_bad_folder(root) -> dict:
  """Writes the folder (classes `a`, `b`, `odd`) and returns the counts a listing and a decoding pass must find."""
  root = pathlib.Path(root)
  for label, name in enumerate(('a', 'b')):
    (root / name).mkdir(parents=True)
    for i in range(GOOD_PER_CLASS):
      (root / name / f'{i}.jpg').write_bytes(_encoded(_noise((40, 32), 100 * label + i), 'JPEG'))
  odd = root / 'odd'
  odd.mkdir()
  files = {
      'gray.jpg': _encoded(_noise((30, 30), 1, 'L'), 'JPEG'),
      'gray.png': _encoded(_noise((30, 30), 2, 'L'), 'PNG'),
      'cmyk.jpg': _encoded(_noise((30, 30), 3, 'CMYK'), 'JPEG'),
      'deep16.png': _encoded(Image.fromarray((np.arange(900).reshape(30, 30) * 70).astype(np.uint16)), 'PNG'),
      'rgba.png': _encoded(_noise((30, 30), 4, 'RGBA'), 'PNG'),
      'palette.gif': _encoded(_noise((30, 30), 5).convert('P'), 'GIF'),
      'plain.bmp': _encoded(_noise((30, 30), 6), 'BMP'),
      'tiny8x8.jpg': _encoded(_noise((8, 8), 7), 'JPEG'),
      'huge8000x6000.jpg': _encoded(Image.new('RGB', (8000, 6000), (200, 30, 60)), 'JPEG', quality=50),
      'UPPER.JPG': _encoded(_noise((30, 30), 8), 'JPEG'),
      'empty.jpg': b'',
      'text.jpg': b'this is a text file named like an image\n',
      'photo.webp': _encoded(_noise((30, 30), 9), 'WEBP'),
      '.hidden.jpg': _encoded(_noise((30, 30), 10), 'JPEG'),
      '._resource_fork.jpg': b'\0\5\26\7 macOS metadata',
      'notes.txt': b'not an image',
  }
  whole = _encoded(_noise((64, 64), 11), 'JPEG')
  files['truncated.jpg'] = whole[:len(whole) // 2]
  for name, data in files.items():
    (odd / name).write_bytes(data)
  return {'listed': 2 * GOOD_PER_CLASS + len(UNUSUAL) + len(UNDECODABLE), 'undecodable': len(UNDECODABLE),
          'ignored': dict(LEFT_OUT)}

"""Reading detection images: sizes and pixels, with missing and undecodable files named and skipped."""
import numpy as np
from PIL import Image
import pytest

from inception.detection import image_check
from inception.detection.image_check import ImageProblem
from inception.detection.records import ImageRecord


def test_read_rgb_names_missing_and_undecodable_files(tmp_path):
  with pytest.raises(ImageProblem, match='no such file') as missing:
    image_check.read_rgb(tmp_path / 'absent.jpg')
  assert missing.value.reason == 'missing_image'
  (tmp_path / 'bad.jpg').write_bytes(b'not a jpeg')
  with pytest.raises(ImageProblem, match='bad.jpg') as bad:
    image_check.read_rgb(tmp_path / 'bad.jpg')
  assert bad.value.reason == 'undecodable_image'


def test_image_size_reads_the_header_or_every_pixel(tmp_path):
  noise = np.random.default_rng(0).integers(0, 256, [60, 100], np.uint8)
  Image.fromarray(noise).save(tmp_path / 'grey.png')
  assert image_check.image_size(str(tmp_path / 'grey.png'), decode=False) == (100, 60)
  assert image_check.read_rgb(tmp_path / 'grey.png').shape == (60, 100, 3)  # grey becomes RGB
  whole = (tmp_path / 'grey.png').read_bytes()
  (tmp_path / 'cut.png').write_bytes(whole[:len(whole) // 2])
  assert image_check.image_size(str(tmp_path / 'cut.png'), decode=False) == (100, 60)  # the header is whole
  with pytest.raises(ImageProblem, match='cut.png'):
    image_check.image_size(str(tmp_path / 'cut.png'), decode=True)


def test_read_images_yields_each_wanted_image_once_in_order_and_names_the_unreadable(tmp_path):
  for name, value in (('a', 10), ('c', 30)):
    Image.fromarray(np.full([4, 5, 3], value, np.uint8)).save(tmp_path / f'{name}.png')
  (tmp_path / 'b.png').write_bytes(b'broken')

  def record(name):
    return ImageRecord(name, str(tmp_path / f'{name}.png'), 5, 4, np.zeros([0, 4]), np.zeros([0], np.int32), (),
                       np.zeros([0], bool))

  records = [record(n) for n in ('c', 'a', 'b', 'd')]
  skipped = []
  read = list(image_check.read_images(records, {'a': 'A', 'b': 'B', 'c': 'C'}, skipped))  # d: not wanted
  assert [(i, int(p[0, 0, 0]), item) for i, p, item in read] == [('c', 30, 'C'), ('a', 10, 'A')]
  assert len(skipped) == 1 and skipped[0].startswith('b (') and 'b.png' in skipped[0]

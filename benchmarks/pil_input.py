"""The PIL reference for the input-pipeline comparison of docs/performance.md: the training crops a PyTorch user builds
with PIL in DataLoader worker processes, over an image folder.

PyTorch is not a dependency of the project; run this with a Python that has torch, numpy and Pillow:

  python benchmarks/pil_input.py --data=../shared/data/caltech101 [--image-size=224] [--batch=32] [--workers=2] \
      [--steps=60] [--warmup=3] [--distort]

Per image, in a worker: open, draft decode (JPEG DCT scaling, only where the crop stays at least the output size),
the paper's crop (area uniform in 8%-100%, aspect log-uniform in [3/4, 4/3], 10 tries, then the aspect-clamped whole
image: the same rule as inception/data/preprocess.py's 'uniform_area'), resize with an interpolation drawn from
bilinear / bicubic / box / nearest, a random flip, and a uint8 [S, S, 3] array. That is the host part of this
project's pipeline. `--distort` adds what a PIL pipeline otherwise does on the host, because it has no device step
to move it to: brightness, contrast, saturation and hue in a random order (torchvision's ColorJitter, written with
PIL). Batches of uint8 tensors are collated in the main process. The last line is `images/s: X`.
"""
import argparse
import math
import os
import random
import time

import numpy as np
import torch
from PIL import Image, ImageEnhance
from torch.utils import data

INTERPOLATIONS = (Image.BILINEAR, Image.BICUBIC, Image.BOX, Image.NEAREST)
EXTENSIONS = ('.jpg', '.jpeg', '.png')


def list_images(root):
  """(path, label) for every image under root/<class>/, classes in sorted order."""
  classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
  return [(os.path.join(root, c, f), label) for label, c in enumerate(classes)
          for f in sorted(os.listdir(os.path.join(root, c))) if f.lower().endswith(EXTENSIONS)]


def crop_window(width, height, rng, area_range=(0.08, 1.0), aspect_range=(3 / 4, 4 / 3), attempts=10):
  """(x, y, w, h): area uniform, aspect log-uniform over the part of the range where that area fits."""
  for _ in range(attempts):
    fraction = rng.uniform(*area_range)
    log_lo = max(math.log(aspect_range[0]), math.log(fraction * width / height))
    log_hi = min(math.log(aspect_range[1]), math.log(width / (fraction * height)))
    if log_lo <= log_hi:
      aspect = math.exp(rng.uniform(log_lo, log_hi))
      area = fraction * width * height
      w = min(max(round(math.sqrt(area * aspect)), 1), width)
      h = min(max(round(math.sqrt(area / aspect)), 1), height)
      return rng.randint(0, width - w), rng.randint(0, height - h), w, h
  w = min(width, round(height * aspect_range[1]))
  h = min(height, round(width / aspect_range[0]))
  return (width - w) // 2, (height - h) // 2, w, h


def distort(image, rng):
  """torchvision ColorJitter(brightness, contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue=0.2) in a random order."""
  def hue(im):
    h, s, v = im.convert('HSV').split()
    shift = int(rng.uniform(-0.2, 0.2) * 255)
    h = Image.fromarray((np.asarray(h, np.uint8).astype(np.int16) + shift).astype(np.uint8), 'L')
    return Image.merge('HSV', (h, s, v)).convert('RGB')

  ops = [lambda im: ImageEnhance.Brightness(im).enhance(rng.uniform(1 - 32 / 255, 1 + 32 / 255)),
         lambda im: ImageEnhance.Contrast(im).enhance(rng.uniform(0.5, 1.5)),
         lambda im: ImageEnhance.Color(im).enhance(rng.uniform(0.5, 1.5)),
         hue]
  rng.shuffle(ops)
  for op in ops:
    image = op(image)
  return image


class TrainCrops(data.Dataset):
  """The training transform per image (module docstring); each index has its own seeded generator."""

  def __init__(self, root, size, with_distortions):
    self.items, self.size, self.with_distortions = list_images(root), size, with_distortions

  def __len__(self):
    return len(self.items)

  def __getitem__(self, index):
    path, label = self.items[index]
    rng = random.Random(index)
    image = Image.open(path)
    x, y, w, h = crop_window(*image.size, rng)
    scale = min(w, h) / self.size
    if scale >= 2 and image.format == 'JPEG':  # DCT scaling by 1/2, 1/4 or 1/8 keeps the crop >= size
      full = image.size
      image.draft('RGB', (math.ceil(full[0] / scale), math.ceil(full[1] / scale)))
      sx, sy = image.size[0] / full[0], image.size[1] / full[1]
      x, y, w, h = int(x * sx), int(y * sy), max(1, int(w * sx)), max(1, int(h * sy))
    image = image.convert('RGB').resize((self.size, self.size), rng.choice(INTERPOLATIONS), box=(x, y, x + w, y + h))
    if rng.random() < 0.5:
      image = image.transpose(Image.FLIP_LEFT_RIGHT)
    if self.with_distortions:
      image = distort(image, rng)
    return torch.from_numpy(np.asarray(image, np.uint8).copy()), label


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--data', required=True, help='An image folder: one subfolder of images per class.')
  parser.add_argument('--image-size', type=int, default=224)
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--workers', type=int, default=2)
  parser.add_argument('--steps', type=int, default=60, help='Timed batches after the warm-up ones.')
  parser.add_argument('--warmup', type=int, default=3)
  parser.add_argument('--distort', action='store_true', help='Also apply the colour distortions on the host.')
  args = parser.parse_args()
  torch.set_num_threads(1)

  dataset = TrainCrops(args.data, args.image_size, args.distort)
  loader = data.DataLoader(dataset, batch_size=args.batch, shuffle=True, num_workers=args.workers, drop_last=True,
                           generator=torch.Generator().manual_seed(0), persistent_workers=True, prefetch_factor=4)
  batches = iter(loader)
  for _ in range(args.warmup):
    next(batches)
  start = time.perf_counter()
  for _ in range(args.steps):
    images, _ = next(batches)
  seconds = (time.perf_counter() - start) / args.steps
  cores = len(os.sched_getaffinity(0))
  rate = args.batch / seconds
  print(f'PIL input pipeline, {args.data}, {args.image_size} px, batch {args.batch}, {args.workers} workers, '
        f'distortions on the host: {args.distort}: {seconds * 1e3:.0f} ms/batch, {rate / cores:.1f} images/s per host '
        f'core ({cores} cores), {images[0].numel()} bytes/image')
  print(f'images/s: {rate:.2f}')


if __name__ == '__main__':
  main()

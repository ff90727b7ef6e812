"""Writes small VOC-layout folders for the reader's tests: real JPEGs, hand-written XML, split files."""
import io
import pathlib
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

# (name, xmin, ymin, xmax, ymax, difficult) as written in the XML.
Obj = Tuple[str, float, float, float, float, int]


def jpeg(width: int, height: int, seed: int = 0) -> bytes:
  pixels = np.random.RandomState(seed).randint(0, 256, (height, width, 3)).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, 'JPEG')
  return buffer.getvalue()


def annotation_xml(filename: str, size: Optional[Tuple[int, int]], objects: Sequence[Obj]) -> str:
  parts = ['<annotation>', f'<folder>JPEGImages</folder><filename>{filename}</filename>']
  if size:
    parts.append(f'<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>')
  for name, x0, y0, x1, y1, difficult in objects:
    parts.append(f'<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>'
                 f'<difficult>{difficult}</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>'
                 f'<ymax>{y1}</ymax></bndbox></object>')
  parts.append('</annotation>')
  return '\n'.join(parts)


def write_voc(root, images: Dict[str, Tuple[Tuple[int, int], Sequence[Obj]]], splits: Dict[str, Sequence[str]]):
  """One JPEG and one XML per entry of `images` (id -> ((width, height), objects)), and the split files."""
  root = pathlib.Path(root)
  for sub in ('Annotations', 'JPEGImages', 'ImageSets/Main'):
    (root / sub).mkdir(parents=True, exist_ok=True)
  for seed, (image_id, (size, objects)) in enumerate(images.items()):
    (root / 'JPEGImages' / f'{image_id}.jpg').write_bytes(jpeg(*size, seed=seed))
    (root / 'Annotations' / f'{image_id}.xml').write_text(annotation_xml(f'{image_id}.jpg', size, objects))
  for split, ids in splits.items():
    (root / 'ImageSets' / 'Main' / f'{split}.txt').write_text(''.join(f'{i}\n' for i in ids))
  return root

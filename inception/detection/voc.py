"""Reads a PASCAL VOC-layout folder: `Annotations/<id>.xml`, `JPEGImages/<id>.jpg`, `ImageSets/Main/<split>.txt`.

`load_split` gives one ImageRecord (records.py) per usable image of a split. VOC writes boxes as 1-based inclusive
pixel indices; records hold continuous coordinates (x0 = xmin - 1, y0 = ymin - 1, x1 = xmax, y1 = ymax), so the
IoU of boxes.py equals the devkit's. Bad input never stops a run and is never dropped silently: each case below is
left out (or, marked kept, changed) and counted, the first few named, in one summary line logged per split (a
warning when anything was left out).
"""
import concurrent.futures
import dataclasses
import math
import os
import pathlib
from typing import ClassVar, Dict, List, Optional, Sequence, Tuple
import xml.etree.ElementTree as ET

from absl import logging
import numpy as np

from inception.detection import boxes as box_ops
from inception.detection.image_check import ImageProblem
from inception.detection.image_check import image_size
from inception.detection.records import ImageRecord
from inception.detection.tally import Tally
from inception.errors import DataError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')
_REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

# Reasons an image or a box is left out (the image: annotation and image problems; the box: the last four).
LEFT_OUT = {
    'missing_annotation': 'images without an annotation file',
    'malformed_annotation': 'malformed annotation files',
    'missing_image': 'missing images',
    'undecodable_image': 'images that do not decode',
    'size_mismatch': 'images whose size differs from their annotation',
    'repeated_id': 'ids repeated in the split file',
    'degenerate_box': 'boxes of zero or negative width or height',
    'outside_box': 'boxes wholly outside their image',
    'unknown_class': 'boxes of classes not in the class list',
}
# Kept, but counted: a box cut to its image, an image with no box (a source of background regions only).
KEPT = {
    'clipped_box': 'boxes clipped to their image',
    'no_boxes': 'images without boxes',
}


class MalformedAnnotation(Exception):
  """An annotation file that is not VOC XML, or an object in it without a readable name or box."""


@dataclasses.dataclass(frozen=True)
class VocObject:
  """One `<object>` as written: its class name, VOC's 1-based inclusive corners, and the difficult flag."""
  name: str
  xmin: float
  ymin: float
  xmax: float
  ymax: float
  difficult: bool

  def describe(self, image_id: str) -> str:
    return f'{image_id}: {self.name} ({self.xmin:g}, {self.ymin:g}, {self.xmax:g}, {self.ymax:g})'


@dataclasses.dataclass(frozen=True)
class VocAnnotation:
  """One annotation file: the image file name and size it states (''/0 when absent) and its objects."""
  filename: str
  width: int
  height: int
  objects: Tuple[VocObject, ...]


def _text(element, tag: str, required: bool) -> Optional[str]:
  child = element.find(tag)
  if child is None or child.text is None or not child.text.strip():
    if required:
      raise MalformedAnnotation(f'<{element.tag}> has no <{tag}>')
    return None
  return child.text.strip()


def _number(element, tag: str) -> float:
  text = _text(element, tag, required=True)
  try:
    value = float(text)
  except ValueError:
    raise MalformedAnnotation(f'<{tag}> is {text!r}, not a number') from None
  if not math.isfinite(value):
    raise MalformedAnnotation(f'<{tag}> is {text!r}')
  return value


def parse_annotation(path) -> VocAnnotation:
  """Reads one VOC XML file; MalformedAnnotation if it does not parse or an object lacks a name or a numeric box.

  One unreadable object makes the whole file malformed: keeping the image without it would teach its object as
  background.
  """
  try:
    root = ET.parse(path).getroot()
  except ET.ParseError as e:
    raise MalformedAnnotation(f'not XML ({e})') from None
  if root.tag != 'annotation':
    raise MalformedAnnotation(f'root element is <{root.tag}>, not <annotation>')
  size = root.find('size')
  width = height = 0
  if size is not None:
    width = int(_number(size, 'width')) if _text(size, 'width', False) else 0
    height = int(_number(size, 'height')) if _text(size, 'height', False) else 0
  objects = []
  for obj in root.findall('object'):
    bndbox = obj.find('bndbox')
    if bndbox is None:
      raise MalformedAnnotation('an <object> has no <bndbox>')
    difficult = _text(obj, 'difficult', required=False)
    try:
      difficult = bool(int(float(difficult))) if difficult else False
    except ValueError:
      raise MalformedAnnotation(f'<difficult> is {difficult!r}') from None
    objects.append(VocObject(_text(obj, 'name', required=True), _number(bndbox, 'xmin'), _number(bndbox, 'ymin'),
                             _number(bndbox, 'xmax'), _number(bndbox, 'ymax'), difficult))
  return VocAnnotation(_text(root, 'filename', required=False) or '', width, height, tuple(objects))


def resolve_root(root: str) -> pathlib.Path:
  """The VOC folder `root` names (as given, else relative to the repository), or a DataError saying what it needs."""
  path = pathlib.Path(os.path.expanduser(str(root)))
  if not path.is_dir() and not path.is_absolute() and (_REPO_ROOT / path).is_dir():
    path = _REPO_ROOT / path
  if not (path / 'Annotations').is_dir():
    raise DataError(f'{root!r} is not a VOC folder: expected {path / "Annotations"}/<id>.xml, JPEGImages/ and '
                    f'ImageSets/Main/<split>.txt (set --config.detection_data.root, e.g. data/bccd).')
  return path


def split_ids(root: pathlib.Path, split: str) -> List[str]:
  """The image ids of `ImageSets/Main/<split>.txt` in file order (the first word of each non-blank line)."""
  path = root / 'ImageSets' / 'Main' / f'{split}.txt'
  if not path.is_file():
    found = sorted(p.stem for p in (root / 'ImageSets' / 'Main').glob('*.txt')) if path.parent.is_dir() else []
    raise DataError(f'No split file {path}; the splits there: {", ".join(found) or "none"}.')
  return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def infer_classes(root: pathlib.Path) -> Tuple[str, ...]:
  """The sorted class names of every readable annotation file in the folder, whatever its split, so that every
  split gets the same class indices."""
  names = set()
  for path in sorted((root / 'Annotations').glob('*.xml')):
    try:
      names.update(obj.name for obj in parse_annotation(path).objects)
    except MalformedAnnotation:
      pass  # counted when a split that lists it is loaded
  if not names:
    raise DataError(f'No class names in {root / "Annotations"}: give the class list (--config.detection_data.classes).')
  return tuple(sorted(names))


def _image_path(root: pathlib.Path, image_id: str, filename: str) -> str:
  """The annotation's <filename> in JPEGImages/ if that exists, else <id> with the first image extension found."""
  images = root / 'JPEGImages'
  candidates = ([images / filename] if filename else []) + [images / (image_id + ext) for ext in IMAGE_EXTENSIONS]
  return str(next((p for p in candidates if p.is_file()), images / (filename or image_id + '.jpg')))


@dataclasses.dataclass
class VocSplit:
  """The records of one split, the class list their labels index, and the tally of what was left out.

  `kind` and `kept_reasons` name the source and what it keeps but counts in the summary (tfds_reader.TfdsSplit's
  differ)."""
  kind: ClassVar[str] = 'VOC split'
  kept_reasons: ClassVar[Dict[str, str]] = KEPT
  root: str
  split: str
  class_names: Tuple[str, ...]
  records: List[ImageRecord]
  tally: Tally

  def box_counts(self) -> Dict[str, int]:
    """Boxes kept per class name, difficult ones included."""
    counts = np.bincount(np.concatenate([r.labels for r in self.records] + [np.zeros(0, np.int32)]),
                         minlength=len(self.class_names))
    return {name: int(n) for name, n in zip(self.class_names, counts)}

  def summary(self) -> str:
    """The one log line: what was read, what was left out and why, what was kept but changed."""
    boxes = sum(len(r.labels) for r in self.records)
    difficult = sum(int(r.difficult.sum()) for r in self.records)
    per_class = ', '.join(f'{name} {n:,}' for name, n in self.box_counts().items())
    return (f'{self.kind} {self.split!r} of {self.root}: {len(self.records):,} images, {boxes:,} boxes ({per_class}; '
            f'{difficult:,} difficult). Left out: {self.tally.describe(LEFT_OUT)}. '
            f'Kept and counted: {self.tally.describe(self.kept_reasons)}.')


def object_boxes(image_id: str, objects: Sequence[VocObject], width: int, height: int, class_index: Dict[str, int],
                 tally: Tally, one_based: bool = True):
  """The kept boxes of one image as (boxes, labels, names, difficult); every other box goes to the tally.

  `objects` hold corners as their source writes them: `one_based`, VOC's 1-based inclusive pixel indices (x0 = xmin -
  1); else continuous coordinates already (COCO's, x0 = xmin). A box with xmax <= xmin or ymax <= ymin as written is
  degenerate either way. Other readers (tfds_reader.py) pass their objects here so every format is judged alike.
  """
  shift = 1.0 if one_based else 0.0
  kept = []
  for obj in objects:
    if obj.name not in class_index:
      tally.add('unknown_class', obj.describe(image_id))
      continue
    if obj.xmax <= obj.xmin or obj.ymax <= obj.ymin:
      tally.add('degenerate_box', obj.describe(image_id))
      continue
    box = np.array([obj.xmin - shift, obj.ymin - shift, obj.xmax, obj.ymax])
    clipped = box_ops.clip(box, width, height)[0]
    if box_ops.area(clipped)[0] <= 0:
      tally.add('outside_box', f'{obj.describe(image_id)} in {width}x{height}')
      continue
    if not np.array_equal(clipped, box):
      tally.add('clipped_box', f'{obj.describe(image_id)} in {width}x{height}')
    kept.append((clipped, class_index[obj.name], obj.name, obj.difficult))
  return (np.array([k[0] for k in kept], np.float64).reshape(-1, 4), np.array([k[1] for k in kept], np.int32),
          tuple(k[2] for k in kept), np.array([k[3] for k in kept], bool))


def load_split(root: str, split: str, classes: Sequence[str], decode_images: bool) -> VocSplit:
  """The usable images of `split`, with their boxes, and one logged summary line.

  `classes`: the class list, in label order; a box of any other class is left out and counted (a list is a
  selection, e.g. 3 of VOC's 20 classes). Empty: every class name in the folder's annotations, sorted.
  `decode_images`: decode every image to catch truncated files (else only the header is read).
  """
  path = resolve_root(root)
  if classes:
    classes = tuple(classes)
    if len(set(classes)) != len(classes) or not all(isinstance(c, str) and c.strip() for c in classes):
      raise DataError(f'The class list {list(classes)} has an empty or repeated name.')
  else:
    classes = infer_classes(path)
    logging.info('VOC folder %s: classes from its annotations: %s.', root, ', '.join(classes))
  class_index = {name: i for i, name in enumerate(classes)}
  tally = Tally({**LEFT_OUT, **KEPT})

  annotations = {}  # id -> VocAnnotation, in split order
  for image_id in split_ids(path, split):
    xml = path / 'Annotations' / f'{image_id}.xml'
    if image_id in annotations:
      tally.add('repeated_id', image_id)
    elif not xml.is_file():
      tally.add('missing_annotation', image_id)
    else:
      try:
        annotations[image_id] = parse_annotation(xml)
      except MalformedAnnotation as e:
        tally.add('malformed_annotation', f'{xml.name}: {e}')

  def check(item):
    image_id, annotation = item
    file = _image_path(path, image_id, annotation.filename)
    try:
      return file, image_size(file, decode_images)
    except ImageProblem as e:
      return file, e

  with concurrent.futures.ThreadPoolExecutor() as pool:  # PIL decodes without the GIL
    sizes = list(pool.map(check, annotations.items()))

  records = []
  for (image_id, annotation), (file, size) in zip(annotations.items(), sizes):
    if isinstance(size, ImageProblem):
      tally.add(size.reason, str(size))
      continue
    width, height = size
    if (annotation.width, annotation.height) != (0, 0) and (annotation.width, annotation.height) != size:
      tally.add('size_mismatch', f'{image_id}: annotated {annotation.width}x{annotation.height}, image '
                                 f'{width}x{height}')
      continue
    boxes, labels, names, difficult = object_boxes(image_id, annotation.objects, width, height, class_index, tally)
    if not len(labels):
      tally.add('no_boxes', image_id)
    records.append(ImageRecord(image_id, file, width, height, boxes, labels, names, difficult))

  result = VocSplit(str(root), split, classes, records, tally)
  if not records:
    raise DataError(f'No usable image in {result.summary()}')
  left_out = sum(tally.count(reason) for reason in LEFT_OUT)
  (logging.warning if left_out else logging.info)('%s', result.summary())
  return result

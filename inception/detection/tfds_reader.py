"""Reads a prepared TFDS detection dataset (`voc/2007`, `coco/2017`, or a builder of the same layout) into the
ImageRecords voc.py gives, so every later stage runs on it unchanged.

The stages read images from files (Selective Search's cache, the region writer, scoring, pictures), so the first load
of a split exports its images once, byte for byte as TFDS holds them, into
`<export root>/<name>/<config>/<version>/<split>/`, and writes `manifest.json` (the split's annotations as TFDS gives
them) last: a later load reads the manifest and checks the files, without reading the TFDS records again; an export cut
short has no manifest and is redone. The export root is `detection_data.tfds_export_dir`, else
`<TFDS data dir>/detection_images`: beside the data it derives from, shared by every run and workdir reading that
dataset (COCO's train images are 18 GB: not a copy per run), keyed by the dataset's version (a rebuilt version exports
anew). Paths go through etils.epath: local or gs://. Image files keep their bytes, so their Selective Search cache
entries (keyed by id and content) are those of the same images read from a VOC folder.

Layouts: `objects` is a Sequence with `bbox` (a BBoxFeature, normalised REL_YXYX or REL_XYXY) and `label` (ClassLabel).
* `voc` (has objects/is_difficult): TFDS's voc builder divides VOC's 1-based xmin, ymin, xmax, ymax by the annotated
  width and height, so the corners as written are bbox x size and the box is (xmin - 1, ymin - 1, xmax, ymax), as in
  voc.py; is_difficult is VOC's difficult flag.
* `coco` (has objects/is_crowd): TFDS's coco builder divides COCO's continuous (x, y, x + w, y + h) by the size: the box
  is bbox x size. A crowd box (one box over a group of objects) is marked difficult: mAP neither requires it nor counts
  a detection on it as a false positive (the nearest the VOC matching has to COCO's crowd rule, which matches crowds by
  the detection's share inside them rather than IoU); the summary counts them.
* any other: continuous coordinates, no flag.
The stored fractions are float32: bbox x size is rounded to 1/1000 pixel, which gives back VOC's integers and COCO's two
decimals exactly. The size is the image file's (TFDS keeps no annotated size to compare it with). The boxes then go
through voc.object_boxes: degenerate, outside and clipped boxes and classes outside the class list are left out,
clipped and counted as voc.py does.

Split names: `val` reads TFDS's `validation` and `trainval` reads `train+validation` when the dataset has no split of
that name; any other name or TFDS split expression (`train[:10%]`) goes to TFDS as it is. A split without a single box
(COCO's test split and VOC 2012's are unlabelled) is refused.
"""
import concurrent.futures
import dataclasses
import json
import re
from typing import ClassVar, Dict, List, Optional, Sequence, Tuple

from absl import logging
from etils import epath
import numpy as np

from inception.detection import voc
from inception.detection.image_check import ImageProblem
from inception.detection.image_check import image_size
from inception.detection.records import ImageRecord
from inception.detection.tally import Tally
from inception.errors import DataError

SPLIT_ALIASES = {'val': 'validation', 'trainval': 'train+validation'}
KEPT = {**voc.KEPT, 'crowd_box': 'crowd boxes (marked difficult)'}
MANIFEST = 'manifest.json'
MANIFEST_FORMAT = 1
DECIMALS = 3            # 1/1000 px: float32 fractions are off by <= 3e-8 x size, so exact below 16,000 px
_WRITE_BATCH = 256      # images held in memory at once while exporting
_WRITERS = 16           # threads writing image files (gs:// writes are latency-bound)
_MAGIC = ((b'\xff\xd8\xff', '.jpg'), (b'\x89PNG', '.png'), (b'GIF8', '.gif'), (b'BM', '.bmp'))


@dataclasses.dataclass(frozen=True)
class Layout:
  """How a builder's objects read: its name, whether boxes are VOC's 1-based indices, and the boolean objects/<flag>
  that marks a box difficult (None: none)."""
  name: str
  one_based: bool
  flag: Optional[str]

  @property
  def crowd(self) -> bool:
    return self.flag == 'is_crowd'


def layout_of(features, name: str) -> Tuple[Layout, str, Tuple[str, ...]]:
  """(layout, bbox format, class names) of a builder's features; a DataError when they are not a detection layout."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  objects = features['objects'] if 'objects' in features.keys() else None
  inner = getattr(objects, 'feature', None)
  if ('image' not in features.keys() or not isinstance(features['image'], tfds.features.Image)
      or not isinstance(objects, tfds.features.Sequence) or inner is None
      or not {'bbox', 'label'} <= set(inner.keys()) or not isinstance(inner['label'], tfds.features.ClassLabel)):
    raise DataError(f'TFDS dataset {name!r} is not a detection layout: expected an `image` and `objects` (a Sequence '
                    f'with `bbox` and a ClassLabel `label`), as `voc` and `coco`; it has {", ".join(features.keys())}.')
  box_format = getattr(inner['bbox'], 'bbox_format', None)
  box_format = getattr(box_format, 'value', box_format)
  if box_format not in ('REL_YXYX', 'REL_XYXY'):
    raise DataError(f'TFDS dataset {name!r}: boxes in format {box_format!r}; this reader takes normalised REL_YXYX '
                    f'(TFDS\'s default, as voc and coco) or REL_XYXY.')
  if 'is_difficult' in inner.keys():
    found = Layout('voc', True, 'is_difficult')
  elif 'is_crowd' in inner.keys():
    found = Layout('coco', False, 'is_crowd')
  else:
    found = Layout('plain', False, None)
  return found, box_format, tuple(inner['label'].names)


def tfds_split(splits: Sequence[str], split: str) -> str:
  """The TFDS split expression a config's split name reads (SPLIT_ALIASES where the dataset lacks the name)."""
  return SPLIT_ALIASES[split] if split in SPLIT_ALIASES and split not in splits else split


def export_folder(builder, export_dir: str, split: str) -> epath.Path:
  """`<export_dir or <data dir>/detection_images>/<name>/<config>/<version>/<split, as a folder name>`."""
  full_name = builder.info.full_name  # name[/config]/version
  if export_dir:
    root = epath.Path(export_dir)
  else:
    root = epath.Path(builder.data_dir)  # <data dir>/<full_name>
    for _ in full_name.split('/'):
      root = root.parent
    root = root / 'detection_images'
  return root / full_name / re.sub(r'[^A-Za-z0-9._+-]', '_', split)


def _extension(data: bytes) -> str:
  return next((ext for magic, ext in _MAGIC if data.startswith(magic)), '.img')


def _image_id(example, index: int, used: set) -> str:
  """The image's file name stem (`image/filename`), else its index in the split; made file-safe and unique."""
  name = example.get('image/filename', b'')
  name = name.decode('utf-8', 'replace') if isinstance(name, bytes) else str(name)
  stem = re.sub(r'[^A-Za-z0-9._-]', '_', epath.Path(name).stem if name else f'{index:08d}')
  image_id = stem if stem not in used else f'{stem}-{index}'
  used.add(image_id)
  return image_id


def export(builder, split: str, folder: epath.Path, layout: Layout) -> List[dict]:
  """Writes the split's images into `folder`; returns one manifest entry per image (id, file, the objects' normalised
  boxes, labels and flags as TFDS gives them)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  folder.mkdir(parents=True, exist_ok=True)
  data = builder.as_dataset(split=split, shuffle_files=False, decoders={'image': tfds.decode.SkipDecoding()})
  entries, pending, used = [], [], set()

  def flush(pool):
    list(pool.map(lambda item: item[0].write_bytes(item[1]), pending))
    pending.clear()

  with concurrent.futures.ThreadPoolExecutor(_WRITERS) as pool:
    for index, example in enumerate(tfds.as_numpy(data)):
      image_id = _image_id(example, index, used)
      file = image_id + _extension(example['image'])
      objects = example['objects']
      entries.append({'id': image_id, 'file': file, 'bbox': objects['bbox'].tolist(),
                      'label': objects['label'].tolist(),
                      'flag': objects[layout.flag].tolist() if layout.flag else [False] * len(objects['label'])})
      pending.append((folder / file, example['image']))
      if len(pending) >= _WRITE_BATCH:
        flush(pool)
      if (index + 1) % 10_000 == 0:
        logging.info('Exported %d images of %s %s to %s.', index + 1, builder.info.full_name, split, folder)
    flush(pool)
  return entries


def read_manifest(folder: epath.Path, full_name: str, split: str, num_examples: int) -> Optional[dict]:
  """The folder's manifest if it is a complete export of this dataset version's split, else None."""
  path = folder / MANIFEST
  try:
    manifest = json.loads(path.read_text()) if path.exists() else None
  except (OSError, ValueError):
    manifest = None
  if (not isinstance(manifest, dict) or manifest.get('format') != MANIFEST_FORMAT
      or (manifest.get('dataset'), manifest.get('split')) != (full_name, split)
      or len(manifest.get('images', ())) != num_examples):
    return None
  return manifest


def corners(bbox: Sequence[Sequence[float]], box_format: str, width: int, height: int) -> np.ndarray:
  """[N, 4] normalised boxes as (xmin, ymin, xmax, ymax) in the source's pixels, rounded to DECIMALS."""
  b = np.asarray(bbox, np.float64).reshape(-1, 4)
  if box_format == 'REL_YXYX':
    b = b[:, [1, 0, 3, 2]]
  return np.round(b * [width, height, width, height], DECIMALS)


@dataclasses.dataclass
class TfdsSplit(voc.VocSplit):
  """voc.VocSplit of a TFDS split: `root` names the dataset and its export folder; `exported` counts the images this
  load wrote (0: the export was reused)."""
  kind: ClassVar[str] = 'TFDS split'
  kept_reasons: ClassVar[Dict[str, str]] = KEPT
  exported: int = 0


def _builder(name: str, data_dir: str):
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  if not name:
    raise DataError('detection_data.format=tfds needs --config.detection_data.tfds_name (e.g. voc/2007, coco/2017).')
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)  # '' = TFDS default (~/tensorflow_datasets)
  except (ValueError, AssertionError) as e:  # DatasetNotFoundError is a ValueError; unknown config or version
    raise DataError(f'No TFDS dataset {name!r}: {str(e).splitlines()[0]}') from None
  if not builder.is_prepared():
    flag = f' --data_dir={data_dir}' if data_dir else ''
    raise DataError(f'TFDS dataset {name!r} is not prepared in {builder.data_dir}: run `tfds build {name}{flag}` '
                    f'(it downloads), or point --config.detection_data.tfds_data_dir where it is prepared.')
  return builder


def load_split(name: str, data_dir: str, split: str, classes: Sequence[str], decode_images: bool,
               export_dir: str = '') -> TfdsSplit:
  """The usable images of TFDS dataset `name`'s `split` (exported on first use), with one logged summary line.

  `classes`: the class list in label order, a selection of the dataset's ClassLabel names (a box of another class is
  left out and counted); empty: all of them, in the dataset's order. `decode_images` as voc.load_split.
  """
  builder = _builder(name, data_dir)
  full_name = builder.info.full_name
  layout, box_format, dataset_classes = layout_of(builder.info.features, name)
  spec = tfds_split(list(builder.info.splits.keys()), split)
  try:
    num_examples = builder.info.splits[spec].num_examples
  except (KeyError, ValueError, AssertionError) as e:
    raise DataError(f'TFDS dataset {full_name} has no split {split!r} ({e}); its splits: '
                    f'{", ".join(builder.info.splits.keys())}.') from None
  classes = tuple(classes) or dataset_classes
  unknown = [c for c in classes if c not in dataset_classes]
  if unknown or len(set(classes)) != len(classes):
    raise DataError(f'The class list {list(classes)} has a repeated name or names not in {full_name} ({unknown}); its '
                    f'classes: {", ".join(dataset_classes)}.')

  folder = export_folder(builder, export_dir, spec)
  manifest = read_manifest(folder, full_name, spec, num_examples)
  exported = 0
  if manifest is None:
    logging.info('Exporting the %d images of %s %s to %s (once).', num_examples, full_name, spec, folder)
    try:
      images = export(builder, spec, folder, layout)
      manifest = {'format': MANIFEST_FORMAT, 'dataset': full_name, 'split': spec, 'layout': layout.name,
                  'class_names': list(dataset_classes), 'images': images}
      (folder / (MANIFEST + '.tmp')).write_text(json.dumps(manifest))
      (folder / (MANIFEST + '.tmp')).rename(folder / MANIFEST)
    except OSError as e:
      raise DataError(f'Cannot export {full_name} {spec} to {folder} ({e}): set --config.detection_data.'
                      f'tfds_export_dir to a writable folder.') from None
    exported = len(images)
  if not any(entry['label'] for entry in manifest['images']):
    raise DataError(f'TFDS split {spec!r} of {full_name} has no boxes at all (unlabelled, as COCO\'s test split and '
                    f'VOC 2012\'s): choose a labelled split, e.g. --config.detection_data.test_split=val.')

  tally = Tally({**voc.LEFT_OUT, **KEPT})
  records = _records(manifest['images'], folder, layout, box_format, dataset_classes, classes, decode_images, tally)
  result = TfdsSplit(f'tfds:{full_name} (images in {folder})', split, classes, records, tally, exported)
  if not result.records:
    raise DataError(f'No usable image in {result.summary()}')
  left_out = sum(tally.count(reason) for reason in voc.LEFT_OUT)
  (logging.warning if left_out else logging.info)('%s', result.summary())
  return result


def _records(images: List[dict], folder: epath.Path, layout: Layout, box_format: str, dataset_classes, classes,
             decode_images: bool, tally: Tally) -> List[ImageRecord]:
  """One ImageRecord per image whose file reads; boxes judged by voc.object_boxes."""
  class_index = {name: i for i, name in enumerate(classes)}

  def check(entry):
    try:
      return image_size(str(folder / entry['file']), decode_images)
    except ImageProblem as e:
      return e

  with concurrent.futures.ThreadPoolExecutor() as pool:  # PIL decodes without the GIL
    sizes = list(pool.map(check, images))
  records = []
  for entry, size in zip(images, sizes):
    if isinstance(size, ImageProblem):
      tally.add(size.reason, str(size))
      continue
    width, height = size
    names = [dataset_classes[label] for label in entry['label']]
    objects = [voc.VocObject(n, *c, bool(flag)) for n, c, flag in
               zip(names, corners(entry['bbox'], box_format, width, height).tolist(), entry['flag'])]
    if layout.crowd:
      for obj in objects:
        if obj.difficult and obj.name in class_index:
          tally.add('crowd_box', obj.describe(entry['id']))
    boxes, labels, kept_names, difficult = voc.object_boxes(entry['id'], objects, width, height, class_index, tally,
                                                            one_based=layout.one_based)
    if not len(labels):
      tally.add('no_boxes', entry['id'])
    records.append(ImageRecord(entry['id'], str(folder / entry['file']), width, height, boxes, labels, kept_names,
                               difficult))
  return records

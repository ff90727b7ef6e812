"""Where examples come from: a folder of class subdirectories, or a prepared TFDS dataset.

Every source yields encoded images (decoding belongs to preprocessing, so a resumed stream can skip
examples without decoding them) as `{'image_bytes': tf.string, 'label': tf.int32}` for one process's
shard, and knows its class and example counts. `dataset()` is `records().map(load)`: a pipeline that
skips far ahead on resume skips records (for the folder source: file paths, no reads) and loads after.
"""
import collections
import hashlib
import os
import pathlib
from typing import Dict, Iterator, List, Optional, Tuple

from absl import logging
from etils import epath
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from inception.errors import DataError
from inception.registry import Registry

SOURCES = Registry('data source')

SPLITS = ('train', 'eval')
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.gif', '.bmp')
# The repository root: parent of the `inception/` package dir, for relative roots run from elsewhere.
_REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


class DatasetNotPreparedError(DataError):
  """A TFDS dataset whose files are not in the data dir; the message says how to prepare it."""


def build_source(config: ml_collections.ConfigDict):
  """Returns the source named by `config.data.source`, built from `config.data`; `{workdir}` in `data.root` stands
  for the run's workdir (configs/detection.py trains on regions written there)."""
  data = config.data
  if '{workdir}' in str(data.get('root', '')):
    data = ml_collections.ConfigDict(data.to_dict())
    data.root = data.root.replace('{workdir}', str(config.workdir).rstrip('/'))
  return SOURCES.get(data.source)(data)


def _check_split(split: str) -> None:
  """Raises ValueError unless `split` is one of SPLITS."""
  if split not in SPLITS:
    raise ValueError(f'Unknown split {split!r}; expected one of {SPLITS}.')


def is_url(path) -> bool:
  """Whether `path` names a file system by its scheme (gs://...) rather than a local path."""
  return '://' in str(path)


def find_root(root: str) -> Optional[epath.Path]:
  """The folder `root` names: a URL (gs://...) as given; a local path as given (absolute or relative to the cwd), else
  relative to the repo root; None if it is not a folder. Read through the path library (tf.io.gfile), so a bucket
  that cannot be read is a DataError naming it."""
  if is_url(root):
    path = epath.Path(str(root).rstrip('/'))
    try:
      return path if path.is_dir() else None
    except tf.errors.OpError as e:
      raise DataError(f'Could not read image folder {root!r} ({type(e).__name__}: {e.message}). Check the bucket '
                      'name and that this machine may read it (gcloud auth application-default login).') from e
  path = pathlib.Path(os.path.expanduser(str(root)))
  if path.is_dir():
    return epath.Path(path)
  if not path.is_absolute() and (_REPO_ROOT / path).is_dir():
    return epath.Path(_REPO_ROOT / path)
  return None


def resolve_root(root: str) -> epath.Path:
  """find_root, or a DataError saying where it looked."""
  path = find_root(root)
  if path is not None:
    return path
  where = 'no object has that prefix' if is_url(root) else f'looked relative to {os.getcwd()} and {_REPO_ROOT}'
  raise DataError(
      f'Image folder {str(root)!r} does not exist ({where}). '
      'Set --config.data.root=/path/to/images or gs://BUCKET/images (a folder of class subfolders, or of train/ and '
      'val/ each holding class subfolders).')


def image_files(args) -> List[str]:
  """The files named and the images under the folders named (recursively, sorted), in the order given: the image
  arguments of inception.predict and inception.detect predict."""
  paths = []
  for arg in args:
    if os.path.isdir(arg):
      found = [os.path.join(d, f) for d, _, files in os.walk(arg) for f in files
               if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS and not f.startswith('.')]
      paths.extend(sorted(found))
    else:
      paths.append(arg)
  return paths


def _walk(top: str) -> Iterator[Tuple[str, List[str], List[str]]]:
  """os.walk(top, followlinks=True) for local folders; for a URL the same through tf.io.gfile, one listing a folder
  (Cloud Storage names a listed subfolder with a trailing '/': no request per file, which an ImageNet folder would
  make millions of). As with os.walk, pruning the yielded folder names in place skips them."""
  if not is_url(top):
    yield from os.walk(top, followlinks=True)
    return
  dirs, files = [], []
  for name in tf.io.gfile.listdir(top):
    (dirs if name.endswith('/') else files).append(name.rstrip('/'))
  yield top, dirs, files
  for name in dirs:
    yield from _walk(f'{top}/{name}')


def _subdirs(path) -> List[str]:
  """Sorted names of the visible subdirectories of `path` (top-level files are ignored)."""
  return sorted(name for name in next(_walk(str(path)), (None, [], []))[1] if not name.startswith('.'))


# Image formats tf.data cannot decode: left out of the listing and named in the warning, not silently dropped.
UNREADABLE_IMAGE_EXTENSIONS = ('.webp', '.tif', '.tiff', '.heic', '.heif', '.avif', '.jp2', '.jxl', '.ico', '.svg')


def _ignored_kind(name: str) -> str:
  """How a listed non-image file is tallied: 'hidden' or its lower-case extension ('' for none)."""
  return 'hidden' if name.startswith('.') else os.path.splitext(name)[1].lower()


def _list_images(class_dir) -> Tuple[List[str], Dict[str, int]]:
  """Image files under `class_dir` (recursively, sorted; hidden files and folders left out; local or a URL) and a
  tally of the other files by kind (_ignored_kind)."""
  images, ignored = [], collections.Counter()
  for dirpath, dirnames, filenames in _walk(str(class_dir)):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
    for name in sorted(filenames):
      if not name.startswith('.') and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
        images.append(f'{dirpath}/{name}')
      else:
        ignored[_ignored_kind(name)] += 1
  return images, dict(ignored)


def ignored_files_warning(root, ignored: Dict[str, int]) -> Optional[str]:
  """One warning about the files a folder source leaves out, naming image formats tf.data cannot decode."""
  if not ignored:
    return None
  unreadable = {k: n for k, n in sorted(ignored.items()) if k in UNREADABLE_IMAGE_EXTENSIONS}
  parts = []
  if unreadable:
    parts.append(f'{sum(unreadable.values())} images in formats tf.data cannot decode '
                 f'({", ".join(f"{n} {k}" for k, n in unreadable.items())}): convert them to JPEG or PNG to use them')
  if ignored.get('hidden'):
    parts.append(f'{ignored["hidden"]} hidden files')
  others = {k or '(no extension)': n for k, n in sorted(ignored.items()) if k not in unreadable and k != 'hidden'}
  if others:
    parts.append(f'{sum(others.values())} other files ({", ".join(f"{n} {k}" for k, n in others.items())})')
  return f'Image folder {root}: left out {"; ".join(parts)}. Read: {", ".join(IMAGE_EXTENSIONS)}.'


def in_val_split(relative_path: str, val_fraction: float) -> bool:
  """Whether a file goes to the eval split: a stable hash of its root-relative path vs val_fraction.

  Hashing the path (not the listing order) keeps a file in the same split when files are added.
  """
  digest = hashlib.sha256(relative_path.encode('utf-8')).digest()
  return int.from_bytes(digest[:8], 'big') / 2.0**64 < val_fraction


def _as_tensors(files: List[Tuple[str, int]]) -> Dict[str, tf.Tensor]:
  """(path, label) pairs as {'path': string [N], 'label': int32 [N]}."""
  return {'path': tf.constant([p for p, _ in files], tf.string, shape=[len(files)]),
          'label': tf.constant([l for _, l in files], tf.int32, shape=[len(files)])}


@SOURCES.register('folder')
class FolderSource:
  """Images in `root/<class>/...`, split by hash, or in `root/train/<class>/...` and `root/val/<class>/...`.

  Class names are the sorted subdirectory names (of `train/` in the second layout); labels 0..C-1.
  In the first layout a file is in the eval split when the hash of its root-relative path falls below
  `val_fraction`; in the second, `val_fraction` is unused.
  """

  random_access = True  # `lookup` reads any example by id: the training order is global (pipeline.py)

  def __init__(self, data_config: ml_collections.ConfigDict):
    self.root = resolve_root(data_config.root)
    self.ignored_files: Dict[str, int] = collections.Counter()  # by kind: '.webp', '.txt', 'hidden', ...
    self._files: Dict[str, List[Tuple[str, int]]] = {s: [] for s in SPLITS}  # (path, label) sorted
    excluded = set(data_config.get('exclude_classes') or ())
    if (self.root / 'train').is_dir() and (self.root / 'val').is_dir():
      self.class_names = self._kept(_subdirs(self.root / 'train'), excluded)
      for split, sub in (('train', 'train'), ('eval', 'val')):
        unknown = set(_subdirs(self.root / sub)) - set(self.class_names) - excluded
        if unknown:
          raise DataError(f'{self.root / sub} has classes that {self.root / "train"} lacks: {sorted(unknown)}. Add '
                          f'their training images to train/, or remove them from {sub}/.')
        for label, name in enumerate(self.class_names):
          if (self.root / sub / name).is_dir():
            self._add(split, self.root / sub / name, label, val_fraction=None)
    else:
      self.class_names = self._kept(_subdirs(self.root), excluded)
      for label, name in enumerate(self.class_names):
        self._add(None, self.root / name, label, val_fraction=float(data_config.val_fraction))
    for split in SPLITS:
      self._files[split].sort()
    self.ignored_files = dict(self.ignored_files)
    warning = ignored_files_warning(self.root, self.ignored_files)
    if warning:
      logging.warning('%s', warning)
    self._check_classes()

  def _kept(self, names: List[str], excluded) -> List[str]:
    """The class folders less `data.exclude_classes` (e.g. the classes a later fine-tuning evaluates on); a name
    that is not a class folder is a DataError, so a typo does not leave a class in."""
    missing = sorted(set(excluded) - set(names))
    if missing:
      raise DataError(f'--config.data.exclude_classes names {missing}, which {self.root} has no folder for (its '
                      f'classes: {", ".join(names[:10])}{", ..." if len(names) > 10 else ""}).')
    return [n for n in names if n not in excluded]

  def _check_classes(self) -> None:
    """DataError for a folder with no images or fewer than two classes; a warning for classes with no training image."""
    where = ('subfolders of ' + str(self.root / 'train')) if (self.root / 'train').is_dir() else str(self.root)
    if not self._files['train']:
      raise DataError(f'No training images in {self.root}: expected class subfolders holding {", ".join(IMAGE_EXTENSIONS)} '
                      f'files (found classes: {self.class_names or "none"}). Point --config.data.root at such a '
                      f'folder.')
    if len(self.class_names) < 2:
      raise DataError(f'{where} has {len(self.class_names)} class ({self.class_names}): a classifier needs at '
                      f'least 2 classes to learn anything. Add a folder per class.')
    counts = collections.Counter(label for _, label in self._files['train'])
    empty = [name for label, name in enumerate(self.class_names) if not counts[label]]
    if empty:
      logging.warning('Classes with no training images: %s. The model still has an output for each, but can never '
                      'learn to predict it.', ', '.join(empty))

  def _add(self, split: Optional[str], class_dir: epath.Path, label: int,
           val_fraction: Optional[float]) -> None:
    """Lists one class folder into `split`, or into the hash-chosen split when `split` is None."""
    images, ignored = _list_images(class_dir)
    self.ignored_files.update(ignored)
    for path in images:
      target = split
      if target is None:
        relative = path[len(str(self.root)) + 1:]
        target = 'eval' if in_val_split(relative, val_fraction) else 'train'
      self._files[target].append((path, label))

  @property
  def num_classes(self) -> int:
    """Number of classes (subfolders)."""
    return len(self.class_names)

  def num_examples(self, split: str) -> int:
    """Number of image files in `split` ('train' or 'eval'), over all processes."""
    _check_split(split)
    return len(self._files[split])

  def files(self, split: str) -> List[Tuple[str, int]]:
    """The sorted (path, label) list of `split`, over all processes."""
    _check_split(split)
    return list(self._files[split])

  def records(self, split: str, *, process_index: int, process_count: int,
              shuffle_seed: Optional[int] = None) -> tf.data.Dataset:
    """One pass over this process's files as {'path', 'label'}: cheap to skip (nothing is read).

    The shard is every `process_count`-th file of the sorted list, from `process_index`. With `shuffle_seed`, the file list is shuffled, and reshuffled on each repeat(), deterministically.
    """
    _check_split(split)
    shard = self._files[split][process_index::process_count]
    ds = tf.data.Dataset.from_tensor_slices(_as_tensors(shard))
    if shuffle_seed is not None and shard:
      ds = ds.shuffle(len(shard), seed=int(shuffle_seed), reshuffle_each_iteration=True)
    return ds

  def shard_position(self, split: str, *, process_index: int, process_count: int) -> Tuple[int, int]:
    """(start, stride): this process's k-th record of `split` is example start + k * stride of the whole split."""
    _check_split(split)
    return process_index, process_count

  def lookup(self, split: str):
    """Random access over the whole split: `fn(example_id int64 []) -> {'path', 'label'}` (nothing is read).

    The training pipeline uses it to read any example by its place in a global, seeded order (see pipeline.py).
    """
    _check_split(split)
    tensors = _as_tensors(self._files[split])
    return lambda i: {k: tf.gather(v, i) for k, v in tensors.items()}

  @staticmethod
  def load(record: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """Reads a record's file: {'path', 'label'} -> {'image_bytes', 'label'}."""
    return {'image_bytes': tf.io.read_file(record['path']), 'label': record['label']}

  def dataset(self, split: str, *, process_index: int, process_count: int,
              shuffle_seed: Optional[int] = None) -> tf.data.Dataset:
    """records() with the files read: {'image_bytes', 'label'} (see records() for order)."""
    return self.records(split, process_index=process_index, process_count=process_count,
                        shuffle_seed=shuffle_seed).map(
                            self.load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _not_prepared_message(name: str, data_dir: str) -> str:
  """How to prepare TFDS dataset `name`; ImageNet needs a manual download first."""
  message = f'TFDS dataset {name!r} is not prepared in {data_dir}. '
  if name.split(':')[0].split('/')[0] == 'imagenet2012':
    message += ('Download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (image-net.org) into '
                '~/tensorflow_datasets/downloads/manual/ and run `tfds build imagenet2012`, ')
  else:
    message += f'Run `tfds build {name}` (with --data_dir to put it elsewhere), '
  return message + 'or point --config.data.tfds_data_dir at a directory where it is prepared.'


def _is_prepared(builder) -> bool:
  """Whether the builder's files exist (`is_prepared()`, else the presence of dataset_info.json)."""
  if hasattr(builder, 'is_prepared'):
    return builder.is_prepared()
  return tf.io.gfile.exists(os.path.join(builder.data_dir, 'dataset_info.json'))


@SOURCES.register('tfds')
class TfdsSource:
  """A prepared TFDS dataset with 'image' and 'label' features; images stay encoded (SkipDecoding).

  Prepared as ArrayRecord (`tfds build --file_format=array_record`) it is read with random access (`lookup`, through
  `tfds.data_source`), so training follows the global order and resumes in O(1) on any number of hosts; as TFRecord
  it is read in order, per process (see pipeline.py).
  """

  def __init__(self, data_config: ml_collections.ConfigDict):
    self.name = data_config.tfds_name
    self.shuffle_buffer = int(data_config.shuffle_buffer)
    self._splits = {'train': data_config.train_split, 'eval': data_config.eval_split}
    self.builder = tfds.builder(self.name, data_dir=data_config.tfds_data_dir or None)  # '' = TFDS default
    if not _is_prepared(self.builder):
      raise DatasetNotPreparedError(_not_prepared_message(self.name, self.builder.data_dir))
    self.random_access = self.builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD

  @property
  def num_classes(self) -> int:
    """Number of classes of the 'label' feature."""
    return self.builder.info.features['label'].num_classes

  @property
  def class_names(self) -> List[str]:
    """The 'label' feature's names (for imagenet2012, the WordNet ids), in label order."""
    return list(self.builder.info.features['label'].names)

  def num_examples(self, split: str) -> int:
    """Number of examples in `split` ('train' or 'eval'), over all processes (from the dataset info)."""
    _check_split(split)
    return self.builder.info.splits[self._splits[split]].num_examples

  def _process_split(self, split: str, process_index: int, process_count: int):
    _check_split(split)
    return tfds.split_for_jax_process(self._splits[split], process_index=process_index, process_count=process_count)

  def shard_size(self, split: str, *, process_index: int, process_count: int) -> int:
    """Number of examples in this process's share of `split`."""
    return self.builder.info.splits[self._process_split(split, process_index, process_count)].num_examples

  def shard_position(self, split: str, *, process_index: int, process_count: int) -> Tuple[int, int]:
    """(start, stride): this process's k-th record of `split` (unshuffled) is example start + k of the whole split
    (the even shares of tfds.split_for_jax_process are contiguous, in process order)."""
    start = sum(self.shard_size(split, process_index=p, process_count=process_count) for p in range(process_index))
    return start, 1

  def records(self, split: str, *, process_index: int, process_count: int,
              shuffle_seed: Optional[int] = None) -> tf.data.Dataset:
    """One pass over this process's even share of the split, as {'image_bytes', 'label'}, in file order.

    With `shuffle_seed`: file order and a `shuffle_buffer` record buffer are shuffled, and reshuffled
    on each repeat(), deterministically for the seed.
    """
    shuffle = shuffle_seed is not None
    read_config = tfds.ReadConfig(
        shuffle_seed=int(shuffle_seed) if shuffle else None,
        shuffle_reshuffle_each_iteration=True if shuffle else None)
    ds = self.builder.as_dataset(
        split=self._process_split(split, process_index, process_count), shuffle_files=shuffle,
        read_config=read_config, decoders={'image': tfds.decode.SkipDecoding()})
    if shuffle:
      ds = ds.shuffle(self.shuffle_buffer, seed=int(shuffle_seed), reshuffle_each_iteration=True)
    return ds.map(lambda ex: {'image_bytes': ex['image'], 'label': tf.cast(ex['label'], tf.int32)},
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

  def lookup(self, split: str):
    """Random access over the whole split (ArrayRecord only): `fn(example_id int64 []) -> {'image_bytes', 'label'}`."""
    if not self.random_access:
      raise ValueError(f'{self.name} is prepared as {self.builder.info.file_format}, not ArrayRecord: no random access.')
    _check_split(split)
    data = self.builder.as_data_source(self._splits[split], decoders={'image': tfds.decode.SkipDecoding()})

    def read(i):
      example = data[int(i)]
      return example['image'], np.int32(example['label'])

    def fn(i):
      image_bytes, label = tf.numpy_function(read, [i], (tf.string, tf.int32), stateful=False)
      return {'image_bytes': tf.ensure_shape(image_bytes, []), 'label': tf.ensure_shape(label, [])}

    return fn

  @staticmethod
  def load(record: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """Records already hold the encoded image: identity."""
    return record

  def dataset(self, split: str, *, process_index: int, process_count: int,
              shuffle_seed: Optional[int] = None) -> tf.data.Dataset:
    """The same as records(): {'image_bytes', 'label'}."""
    return self.records(split, process_index=process_index, process_count=process_count,
                        shuffle_seed=shuffle_seed)

from inception.data import box_source  # noqa: E402,F401  (registers 'voc_boxes')

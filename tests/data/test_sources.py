"""Tests for inception/data/sources.py: folder listing, hash split, sharding, shuffling, TFDS source."""
import logging
import os
import pathlib

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from inception.data import sources
from inception.errors import DataError
from tests.data.bad_images import make_bad_folder
from tests.data.image_folders import make_folder

REPO = pathlib.Path(__file__).resolve().parents[2]
MINI = REPO / 'data' / 'caltech101-mini'


def data_config(**overrides) -> ml_collections.ConfigDict:
  """The data section of the config with test overrides."""
  config = dict(source='folder', root=str(MINI), val_fraction=0.2, tfds_name='imagenet2012',
                tfds_data_dir=None, train_split='train', eval_split='validation', shuffle_buffer=16)
  config.update(overrides)
  return ml_collections.ConfigDict(config)


def collect(ds: tf.data.Dataset) -> list:
  """(image_bytes, label) pairs of a source dataset, in order."""
  return [(ex['image_bytes'], int(ex['label'])) for ex in ds.as_numpy_iterator()]


def test_classes_labels_and_ignored_files(tmp_path):
  make_folder(tmp_path, {'zebra': 2, 'ant': 3, 'moth': 1})
  (tmp_path / 'ant' / 'notes.txt').write_text('ignored')
  (tmp_path / 'moth' / 'x.Png').write_bytes(tf.io.encode_png(np.zeros([4, 4, 3], np.uint8)).numpy())
  source = sources.FolderSource(data_config(root=str(tmp_path), val_fraction=0.0))
  assert source.class_names == ['ant', 'moth', 'zebra']  # Sorted; LICENSE.md is not a class.
  assert source.num_classes == 3
  assert source.ignored_files == {'.txt': 1}
  assert source.num_examples('train') == 7 and source.num_examples('eval') == 0
  labels = sorted(l for _, l in source.files('train'))
  assert labels == [0, 0, 0, 1, 1, 2, 2]
  for path, label in source.files('train'):
    assert pathlib.Path(path).parent.name == source.class_names[label]


def test_hash_split_on_caltech_mini_is_deterministic_disjoint_and_complete():
  first, second = sources.FolderSource(data_config()), sources.FolderSource(data_config())
  assert first.num_classes == 10
  assert first.files('train') == second.files('train')
  assert first.files('eval') == second.files('eval')
  train = {p for p, _ in first.files('train')}
  val = {p for p, _ in first.files('eval')}
  assert not train & val
  on_disk = {os.path.join(d, f) for d, _, fs in os.walk(MINI) for f in fs if d != str(MINI)}
  assert train | val == on_disk
  assert 150 <= len(val) <= 250  # 1000 images * 0.2, a binomial draw (sd ~13).


def test_hash_split_depends_only_on_relative_path(tmp_path):
  make_folder(tmp_path / 'a', {'x': 20, 'y': 20})
  make_folder(tmp_path / 'b', {'x': 20, 'y': 20, 'z': 5}, start_seed=100)
  eval_a = sources.FolderSource(data_config(root=str(tmp_path / 'a'), val_fraction=0.5)).files('eval')
  eval_b = sources.FolderSource(data_config(root=str(tmp_path / 'b'), val_fraction=0.5)).files('eval')

  def relative(files, root):
    return {pathlib.Path(p).relative_to(root).as_posix() for p, _ in files}

  assert relative(eval_a, tmp_path / 'a') == relative(eval_b, tmp_path / 'b') - {
      f'z/img_{i:03d}.JPG' for i in range(5)}
  assert 0 < len(eval_a) < 40


def test_explicit_train_val_folders(tmp_path):
  make_folder(tmp_path / 'train', {'cat': 3, 'dog': 4})
  make_folder(tmp_path / 'val', {'dog': 2}, start_seed=50)
  source = sources.FolderSource(data_config(root=str(tmp_path), val_fraction=0.5))
  assert source.class_names == ['cat', 'dog']
  assert source.num_examples('train') == 7
  assert [l for _, l in source.files('eval')] == [1, 1]
  assert all('/val/' in p for p, _ in source.files('eval'))


def test_excluded_classes_are_left_out_in_both_layouts_and_a_typo_is_an_error(tmp_path):
  """data.exclude_classes: labels are 0..C-1 over the classes kept; in the train/ + val/ layout the excluded class is
  left out of val/ too; a name with no folder is a DataError naming it."""
  make_folder(tmp_path / 'flat', {'ant': 2, 'bee': 3, 'cat': 1})
  source = sources.FolderSource(data_config(root=str(tmp_path / 'flat'), val_fraction=0.0, exclude_classes=('bee',)))
  assert source.class_names == ['ant', 'cat'] and sorted(l for _, l in source.files('train')) == [0, 0, 1]
  make_folder(tmp_path / 'split' / 'train', {'cat': 2, 'dog': 2, 'emu': 1})
  make_folder(tmp_path / 'split' / 'val', {'cat': 1, 'dog': 1}, start_seed=50)
  source = sources.FolderSource(data_config(root=str(tmp_path / 'split'), exclude_classes=('cat',)))
  assert source.class_names == ['dog', 'emu'] and source.num_examples('train') == 3
  assert [(pathlib.Path(p).parent.name, l) for p, l in source.files('eval')] == [('dog', 0)]
  with pytest.raises(DataError, match=r"exclude_classes names \['cow'\], which .* has no folder"):
    sources.FolderSource(data_config(root=str(tmp_path / 'flat'), exclude_classes=('cow',)))


def test_val_class_missing_from_train_is_an_error(tmp_path):
  make_folder(tmp_path / 'train', {'cat': 1})
  make_folder(tmp_path / 'val', {'cow': 1})
  with pytest.raises(ValueError, match='cow'):
    sources.FolderSource(data_config(root=str(tmp_path)))


def test_missing_root_names_path_and_flag():
  with pytest.raises(ValueError, match='--config.data.root=') as error:
    sources.FolderSource(data_config(root='no/such/images'))
  assert 'no/such/images' in str(error.value)


def test_relative_root_falls_back_to_repo_root(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  source = sources.FolderSource(data_config(root='data/caltech101-mini'))
  assert source.root.resolve() == MINI
  assert source.num_examples('train') + source.num_examples('eval') == 1000


def test_process_shards_are_disjoint_and_cover(tmp_path):
  make_folder(tmp_path, {'a': 6, 'b': 5})
  source = sources.FolderSource(data_config(root=str(tmp_path), val_fraction=0.0))
  shards = [collect(source.dataset('train', process_index=i, process_count=2)) for i in range(2)]
  assert [len(s) for s in shards] == [6, 5]
  images = [b for shard in shards for b, _ in shard]
  assert len(set(images)) == 11
  everything = collect(source.dataset('train', process_index=0, process_count=1))
  assert sorted(shards[0] + shards[1]) == sorted(everything)


def test_shuffle_is_deterministic_and_reshuffles_each_epoch(tmp_path):
  make_folder(tmp_path, {'a': 10, 'b': 10})
  source = sources.FolderSource(data_config(root=str(tmp_path), val_fraction=0.0))
  unshuffled = collect(source.dataset('train', process_index=0, process_count=1))

  def run(seed):
    return collect(
        source.dataset('train', process_index=0, process_count=1, shuffle_seed=seed).repeat(2))

  first, again, other = run(3), run(3), run(4)
  assert first == again
  assert first != other
  epoch1, epoch2 = first[:20], first[20:]
  assert sorted(epoch1) == sorted(epoch2) == sorted(unshuffled)
  assert epoch1 != epoch2 and epoch1 != unshuffled


def test_unknown_split_and_source():
  source = sources.FolderSource(data_config())
  with pytest.raises(ValueError, match='split'):
    source.num_examples('validation')
  with pytest.raises(ValueError, match='nope'):
    sources.build_source(ml_collections.ConfigDict(dict(data=data_config(source='nope'))))


def test_tfds_not_prepared_says_how(tmp_path):
  with pytest.raises(sources.DatasetNotPreparedError) as error:
    sources.build_source(ml_collections.ConfigDict(
        dict(data=data_config(source='tfds', tfds_data_dir=str(tmp_path)))))
  assert isinstance(error.value, ValueError)
  message = str(error.value)
  for needle in ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar', 'downloads/manual',
                 'tfds build imagenet2012', '--config.data.tfds_data_dir'):
    assert needle in message


class InceptionDataTestTiny(tfds.core.GeneratorBasedBuilder):
  """A 3-class TFDS dataset of solid-colour JPEGs (pixel value = example id), prepared offline."""

  VERSION = tfds.core.Version('1.0.0')
  # No checksums file to look up; TFDS's own lookup needs `importlib_resources` for test packages.
  code_path = None

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
        'label': tfds.features.ClassLabel(num_classes=3)}))

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {'train': self._generate_examples(0, 12), 'validation': self._generate_examples(100, 5)}

  def _generate_examples(self, first, count):
    for i in range(first, first + count):
      yield i, {'image': np.full([8, 10, 3], i, np.uint8), 'label': i % 3}


def test_tfds_source_on_a_tiny_prepared_dataset(tmp_path):
  tfds.builder('inception_data_test_tiny', data_dir=str(tmp_path)).download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  source = sources.build_source(ml_collections.ConfigDict(dict(data=data_config(
      source='tfds', tfds_name='inception_data_test_tiny', tfds_data_dir=str(tmp_path)))))
  assert source.num_classes == 3
  assert source.num_examples('train') == 12 and source.num_examples('eval') == 5

  def ids(split, index, count, seed=None):
    ds = source.dataset(split, process_index=index, process_count=count, shuffle_seed=seed)
    out = []
    for ex in ds.as_numpy_iterator():
      pixels = tf.io.decode_jpeg(ex['image_bytes']).numpy()
      assert pixels.shape == (8, 10, 3) and ex['label'].dtype == np.int32
      out.append(int(np.round(pixels.mean())))
      assert out[-1] % 3 == ex['label']
    return out

  shards = [ids('eval', i, 2) for i in range(2)]
  assert sorted(shards[0] + shards[1]) == list(range(100, 105))
  assert len(shards[0]) == 3 and len(shards[1]) == 2
  assert ids('train', 0, 1, seed=7) == ids('train', 0, 1, seed=7)
  assert sorted(ids('train', 0, 1, seed=7)) == list(range(12))


def test_folder_records_are_paths_and_load_reads_them(tmp_path):
  make_folder(tmp_path, {'a': 2, 'b': 1})
  source = sources.FolderSource(data_config(root=str(tmp_path), val_fraction=0.0))
  records = list(source.records('train', process_index=0, process_count=1).as_numpy_iterator())
  assert [(r['path'].decode(), int(r['label'])) for r in records] == source.files('train')
  loaded = [source.load(r) for r in records]
  assert [l['image_bytes'].numpy() for l in loaded] == [b for b, _ in collect(
      source.dataset('train', process_index=0, process_count=1))]


def test_every_kind_of_file_is_listed_or_left_out_and_named(tmp_path, caplog):
  expected = make_bad_folder(tmp_path)
  with caplog.at_level(logging.WARNING):
    source = sources.FolderSource(data_config(root=str(tmp_path), val_fraction=0.0))
  assert source.num_examples('train') == expected['listed']
  assert source.ignored_files == expected['ignored']
  names = {pathlib.Path(p).name for p, _ in source.files('train')}
  assert not any(n.startswith('.') for n in names) and 'UPPER.JPG' in names
  warning = ' '.join(r.getMessage() for r in caplog.records)
  assert '1 images in formats tf.data cannot decode (1 .webp): convert them to JPEG or PNG' in warning
  assert '2 hidden files' in warning and '1 other files (1 .txt)' in warning


def test_no_images_one_class_and_empty_classes(tmp_path, caplog):
  (tmp_path / 'none' / 'a').mkdir(parents=True)
  (tmp_path / 'none' / 'a' / 'readme.txt').write_text('x')
  with pytest.raises(DataError, match=r'No training images in .*none.*\.jpg'):
    sources.FolderSource(data_config(root=str(tmp_path / 'none'), val_fraction=0.0))
  make_folder(tmp_path / 'one', {'cat': 3})
  with pytest.raises(DataError, match=r'has 1 class .*at least 2 classes'):
    sources.FolderSource(data_config(root=str(tmp_path / 'one'), val_fraction=0.0))
  make_folder(tmp_path / 'some', {'cat': 3, 'dog': 2})
  (tmp_path / 'some' / 'emu').mkdir()
  with caplog.at_level(logging.WARNING):
    source = sources.FolderSource(data_config(root=str(tmp_path / 'some'), val_fraction=0.0))
  assert source.num_classes == 3
  assert 'Classes with no training images: emu' in caplog.text and 'never' in caplog.text

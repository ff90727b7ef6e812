"""The annotated images of a split, from `config.detection_data`: the one entry every stage loads them through.

`format` picks the reader: 'voc', a PASCAL VOC-layout folder (voc.py: `root`); 'tfds', a prepared TFDS detection
dataset (tfds_reader.py: `tfds_name`, `tfds_data_dir`, `tfds_export_dir`), its images exported once to files. Both give
a voc.VocSplit of ImageRecords with the same box convention and bad-input tally.
"""
import ml_collections

from inception.detection import voc
from inception.errors import UserError

FORMATS = ('voc', 'tfds')


def _format(data_config: ml_collections.ConfigDict) -> str:
  fmt = data_config.get('format', 'voc')
  if fmt not in FORMATS:
    raise UserError(f'--config.detection_data.format={fmt!r}: expected one of {", ".join(FORMATS)}.')
  return fmt


def load_split(data_config: ml_collections.ConfigDict, split: str) -> voc.VocSplit:
  """The usable images of `split` with their boxes (and one logged summary line), by `data_config.format`."""
  d = data_config
  if _format(d) == 'tfds':
    from inception.detection import tfds_reader  # pylint: disable=import-outside-toplevel  # TensorFlow: only here
    return tfds_reader.load_split(d.get('tfds_name', ''), d.get('tfds_data_dir', ''), split, d.classes,
                                  d.decode_images, d.get('tfds_export_dir', ''))
  return voc.load_split(d.root, split, d.classes, d.decode_images)


def source(data_config: ml_collections.ConfigDict) -> str:
  """What the images are read from, as settings record it: the VOC folder, or `tfds:<name>`."""
  if _format(data_config) == 'tfds':
    return f'tfds:{data_config.get("tfds_name", "")}'
  return str(data_config.root)

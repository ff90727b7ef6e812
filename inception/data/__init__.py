"""Input data: sources (folder / TFDS), per-example preprocessing, and the tf.data pipelines."""
from inception.data.pipeline import EvalBatches
from inception.data.pipeline import eval_batches
from inception.data.pipeline import train_batches
from inception.data.preprocess import PREPROCESS
from inception.data.sources import DatasetNotPreparedError
from inception.data.sources import SOURCES
from inception.data.sources import build_source

"""Keras applications models (Keras 3 on the JAX backend) with random weights and random BatchNorm statistics, saved
in the legacy HDF5 layout of the files `keras.applications` downloads, with their logits on fixed inputs."""
import os
import warnings

os.environ.setdefault('KERAS_BACKEND', 'jax')  # before keras is first imported

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras.src.legacy.saving import legacy_h5_format  # noqa: E402

CONSTRUCTORS = {'inception_v3': keras.applications.InceptionV3,
                'inception_resnet_v2': keras.applications.InceptionResNetV2}


def build(model_name: str, size: int = 75, classes: int = 10, include_top: bool = True):
  """The Keras model, its BatchNorm offsets and statistics drawn at random (so that they matter)."""
  model = CONSTRUCTORS[model_name](weights=None, input_shape=(size, size, 3), classes=classes, include_top=include_top,
                                   classifier_activation=None)
  rng = np.random.default_rng(0)
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      shape = tuple(layer.moving_mean.shape)
      layer.beta.assign(rng.uniform(-0.2, 0.2, shape).astype('float32'))
      layer.moving_mean.assign(rng.uniform(-0.5, 0.5, shape).astype('float32'))
      layer.moving_variance.assign(rng.uniform(0.5, 1.5, shape).astype('float32'))
  return model


def save(model, path: str) -> None:
  """The weights as `model.save_weights('x.h5')` wrote them in Keras 2 (what keras.applications downloads)."""
  with h5py.File(path, 'w') as f, warnings.catch_warnings():
    # Keras 3.15's legacy writer calls np.array(variable, copy=False), which NumPy 2 deprecates for its variables.
    warnings.filterwarnings('ignore', "__array__ implementation doesn't accept a copy keyword", DeprecationWarning)
    legacy_h5_format.save_weights_to_hdf5_group(f, model)


def logits(model, images: np.ndarray) -> np.ndarray:
  """images [B, S, S, 3] in [-1, 1] (Keras' preprocess_input for these models) -> logits [B, classes]."""
  return np.asarray(model(images, training=False))

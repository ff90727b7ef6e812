"""Importing pretrained weights from other frameworks' files into a workdir that evaluate, predict and init_from
accept. One module per file format, registered by name in FORMATS; `python -m inception.convert` is the command."""
from inception.registry import Registry

FORMATS = Registry('weight format')

# Imported for their @FORMATS.register side effects.
from inception.convert import keras_h5  # noqa: E402,F401  pylint: disable=g-import-not-at-top
from inception.convert import timm_safetensors  # noqa: E402,F401  pylint: disable=g-import-not-at-top
from inception.convert import onnx_googlenet  # noqa: E402,F401  pylint: disable=g-import-not-at-top

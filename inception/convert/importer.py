"""The conversion itself, for every format: read the file, build the model its recipe describes, map every tensor
(with the background class of 1001-class files dropped or kept), and write the workdir (output.py).

A format module registers an object in FORMATS with:
- `models`: model name -> Target (the model keys and input convention the weights need);
- `read(path)`: the file's tensors by name, as numpy arrays, through the format's plain reader;
- `classifier(model_name, tensors)`: (kernel key, bias key, class axis) of the main classifier, or None (no top);
- `model_keys(model_name, tensors)`: model keys that depend on the file (e.g. an aux head it carries);
- `assign(model_name, model, assignment)`: puts every tensor; returns (leave, ignore, notes): model prefixes left at
  their initialisation, file keys that carry no weights, and lines for the record.
"""
import hashlib
import os
from typing import Any, Dict, Optional

import numpy as np
from absl import logging

from inception.convert import FORMATS
from inception.convert import mapping, output
from inception.convert.mapping import ConvertError

BACKGROUND = ('drop', 'keep')


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def _classes(tensors, where, background: str):
  """(number of classes, class names or None, what was done about a background class); drops row 0 of a
  1001-class classifier (index 0 = background, as TF-slim's and the old timm ports' files) when `background` is
  'drop'."""
  if where is None:
    return None, None, 'the file has no classifier (include_top=False): head initialised, 1000 classes'
  kernel_key, bias_key, axis = where
  count = tensors[kernel_key].shape[axis]
  if count == 1000:
    return 1000, output.imagenet_synsets(), 'ImageNet 1000 classes'
  if count == 1001:
    if background == 'drop':
      tensors[kernel_key] = np.delete(tensors[kernel_key], 0, axis=axis)
      tensors[bias_key] = np.delete(tensors[bias_key], 0, axis=0)
      return 1000, output.imagenet_synsets(), '1001 classes: the background class (index 0) dropped'
    return 1001, ['background'] + output.imagenet_synsets(), '1001 classes: the background class kept as class 0'
  return count, None, f'{count} classes (not ImageNet\'s): classes named by index'


def convert(format_name: str, model_name: str, path: str, out: str, *, background: str = 'drop',
            image_size: Optional[int] = None, input_convention: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
  """Converts the weight file `path` (format `format_name`) onto `model_name` and writes the workdir `out`; returns
  the record written to out/converted.json. `image_size` and `input_convention` (pp keys value_range / mean / std)
  replace the format's usual ones in the recorded config."""
  if format_name not in FORMATS:
    raise ConvertError(f'--format={format_name}: unknown; use one of {", ".join(FORMATS.names())}.')
  fmt = FORMATS.get(format_name)
  if model_name not in fmt.models:
    raise ConvertError(f'--format={format_name} converts {", ".join(sorted(fmt.models))}, not --model={model_name}.')
  if background not in BACKGROUND:
    raise ConvertError(f'--background={background!r}: use one of {", ".join(BACKGROUND)}.')
  if not os.path.isfile(path):
    raise ConvertError(f'{path}: no such file. Pass the weight file you downloaded (README, "Pretrained weights").')
  output.check_new(out)
  target = fmt.models[model_name]
  tensors = dict(fmt.read(path))
  where = fmt.classifier(model_name, tensors)
  num_classes, names, classes_note = _classes(tensors, where, background)
  num_classes = num_classes or 1000  # a file without its top: ImageNet's count, the head left initialised
  pp = {**target.pp, **(input_convention or {})}
  if image_size:
    pp['image_size'] = image_size
  config = output.recipe_config(model_name, {**target.model, **fmt.model_keys(model_name, tensors)}, pp, out)
  model, params, stats = output.model_arrays(config, num_classes)
  what = f'{os.path.basename(path)} ({format_name})'
  assignment = mapping.Assignment({**params, **stats}, tensors, what)
  leave, ignore, notes = fmt.assign(model_name, model, assignment)
  if where is None:
    leave = tuple(leave) + ('head',)
  filled = assignment.finish(leave=leave, ignore=ignore)
  record = dict(format=format_name, model=model_name, file=os.path.abspath(path), sha256=_sha256(path),
                tensors_used=len(assignment.used), tensors_ignored=len([k for k in ignore if k in tensors]),
                left_initialised=sorted(p for p in filled if p.split('/')[0] in leave), classes=classes_note,
                num_classes=num_classes, pp={k: config.pp[k] for k in ('image_size', 'value_range', 'mean', 'std')},
                notes=list(notes))
  output.write(out, config, model, num_classes, {k: filled[k] for k in params},
               {k: filled[k] for k in stats}, names, record)
  logging.info('Converted %s onto %s: %d tensors into %s.', path, model_name, len(assignment.used), out)
  return record

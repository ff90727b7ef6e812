"""Classify your own images with a trained run: the top classes by name, with probabilities.

  python -m inception.predict --workdir=W [--crops=1|10|144] [--top=5] [--weights=ema|raw] [--step=N] [--json] \
      IMAGE_OR_FOLDER...

Folders are searched recursively for images. Each image goes through the run's eval transform (1 crop) or the paper's
10 or 144 crops, the probabilities averaged over its crops (as inception.evaluate does). Output: one block per image,
its path and then `prob  class` lines; with --json one object per line, {"path": ..., "top": [{"class": name,
"index": i, "prob": p}, ...]} with full-precision probabilities. A missing or undecodable file gets an error line
(JSON: {"path": ..., "error": ...}) and the others still run; the exit code is then 1. The class names are the run's
(classes.json: its folder names or TFDS label names).
"""
import json
import os
import re

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app, flags

from inception import command

_WORKDIR = flags.DEFINE_string('workdir', None, 'The trained run (its --config.workdir).', required=True)
_CROPS = flags.DEFINE_enum('crops', '1', ['1', '10', '144'], 'Crops per image, averaged.')
_TOP = flags.DEFINE_integer('top', 5, 'How many classes to show per image.')
_WEIGHTS = flags.DEFINE_enum('weights', 'ema', ['ema', 'raw'], 'The averaged (EMA) or the raw weights.')
_STEP = flags.DEFINE_integer('step', None, 'The checkpoint step (default: the latest).')
_JSON = flags.DEFINE_bool('json', False, 'One JSON object per line per image instead of text blocks.')


def top_classes(probs, k: int, names):
  """[{'class', 'index', 'prob'}] of the k most probable classes of probs [C]."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  order = np.argsort(-probs, kind='stable')[:k]
  return [{'class': names[i] if names else f'class {i}', 'index': int(i), 'prob': float(probs[i])} for i in order]


def main(argv):
  from inception.data.sources import image_files  # pylint: disable=import-outside-toplevel
  paths = image_files(argv[1:])
  if not paths:
    raise app.UsageError('Name at least one image file or folder of images.')
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from inception import augment, compile_cache, compiler_options, sharding, steps, trained  # pylint: disable=import-outside-toplevel
  from inception.data import crops as crops_lib  # pylint: disable=import-outside-toplevel
  compile_cache.enable(trained.load_config(_WORKDIR.value).get('compile_cache', ''), _WORKDIR.value)
  mesh = sharding.make_mesh(jax.local_devices()[:1])
  run = trained.load(_WORKDIR.value, mesh, step=_STEP.value, weights=_WEIGHTS.value)  # a UserError: one line
  crops = int(_CROPS.value)
  pp = augment.stage_pp(run.config.pp, 'eval')
  predict = jax.jit(steps.make_predict_step(run.graphdef, run.config),
                    compiler_options=compiler_options.for_backend(run.config, inference=True))
  failed = 0
  for path in paths:
    try:
      with open(path, 'rb') as f:
        data = f.read()
      images = crops_lib.multi_crop(tf.constant(data), crops, pp).numpy()  # uint8 [K, S, S, 3]
    except (OSError, tf.errors.OpError, ValueError) as e:
      failed += 1
      if isinstance(e, OSError):
        reason = e.strerror or str(e)
      else:  # TF's message without its op-name wrapping
        detail = re.sub(r'\{\{.*?\}\}\s*|\s*\[Op:.*$', '', str(e).strip().splitlines()[0])
        reason = f'not a readable image ({detail})'
      print(json.dumps({'path': path, 'error': reason}) if _JSON.value else f'{path}\n  error: {reason}',
            flush=True)
      continue
    probs = np.asarray(predict(run.params, run.model_state, {'image': images})['probs']).mean(axis=0)
    top = top_classes(probs, _TOP.value, run.class_names)
    if _JSON.value:
      print(json.dumps({'path': path, 'top': top}), flush=True)
    else:
      print(path + ''.join(f'\n  {t["prob"]:.4f}  {t["class"]}' for t in top), flush=True)
  return command.EXIT_ERROR if failed else command.EXIT_OK


def run():
  """The command (inception/command.py); it computes steps."""
  command.run(main, computes_steps=True)


if __name__ == '__main__':
  run()

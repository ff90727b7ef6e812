"""Import pretrained weights: `python -m inception.convert --format=FORMAT --model=NAME FILE --out=DIR`.

  --format=keras_h5          Keras applications' .h5 (InceptionV3, InceptionResNetV2; with or without the top)
  --format=timm_safetensors  timm's model.safetensors (inception_v3, inception_v4, inception_resnet_v2)
  --format=onnx              the ONNX model zoo's BVLC GoogLeNet (googlenet)

DIR becomes a workdir holding the model's recipe config (configs/<NAME>.py) with the weights' input convention, the
class names and a step-0 checkpoint: `python -m inception.evaluate --workdir=DIR`, `python -m inception.predict
--workdir=DIR IMAGE...` and `--config.init_from=DIR` read it. 1001-class files (index 0 = background) lose that
class by default (`--background=keep` keeps it). Nothing is downloaded: FILE is the file you fetched. The last line is
`converted: N tensors -> DIR`.
"""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app, flags

from inception import command

_FORMAT = flags.DEFINE_string('format', None, 'The weight file\'s format: keras_h5, timm_safetensors or onnx.',
                              required=True)
_MODEL = flags.DEFINE_string('model', None, 'The model here (a configs/<model>.py recipe).', required=True)
_OUT = flags.DEFINE_string('out', None, 'The workdir to write (must not hold a run).', required=True)
_BACKGROUND = flags.DEFINE_enum('background', 'drop', ['drop', 'keep'], '1001-class files: drop the background class '
                                '(index 0) or keep it as class 0.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', None, 'The input side to record (default: the weights\' own).')
_VALUE_RANGE = flags.DEFINE_list('value_range', None, 'LOW,HIGH: the input range to record, for weights trained '
                                 'otherwise than their format\'s usual (default: the format\'s).')
_MEAN = flags.DEFINE_list('mean', None, 'R,G,B: the per-channel mean to record (e.g. timm\'s gluon_in1k v3: '
                          '--value_range=0,1 --mean=0.485,0.456,0.406 --std=0.229,0.224,0.225).')
_STD = flags.DEFINE_list('std', None, 'R,G,B: the per-channel std to record.')


def main(argv):
  if len(argv) != 2:
    raise app.UsageError('Pass exactly one weight file: python -m inception.convert --format=... --model=... FILE '
                         '--out=DIR')
  from inception.convert import importer  # pylint: disable=import-outside-toplevel
  convention = {key: tuple(float(v) for v in flag.value) for key, flag in
                (('value_range', _VALUE_RANGE), ('mean', _MEAN), ('std', _STD)) if flag.value}
  record = importer.convert(_FORMAT.value, _MODEL.value, argv[1], _OUT.value, background=_BACKGROUND.value,
                            image_size=_IMAGE_SIZE.value, input_convention=convention)  # a UserError: one line
  for line in record['notes'] + [record['classes']]:
    print(line)
  if record['left_initialised']:
    print(f'left at their initialisation: {", ".join(sorted({p.split("/")[0] for p in record["left_initialised"]}))}')
  print(f'converted: {record["tensors_used"]} tensors -> {_OUT.value}', flush=True)


if __name__ == '__main__':
  command.run(main)  # it computes no step: never restarts

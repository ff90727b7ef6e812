"""How long a resumed training stream takes to give its first batch, at the start and deep into a long run.

  python benchmarks/resume.py [--num_examples=1281167] [--steps=0,1000,200000,1000000] [--batch_size=256]

A synthetic random-access source of ImageNet's size (every example the same small JPEG, looked up by id) goes through
the real training pipeline (global order, masked decoding, batching) of the `mini` recipe; the time to the first batch
at each resume step is printed. O(1) resume means the figures do not grow with the step.
"""
import argparse
import time

import numpy as np
import tensorflow as tf

from configs import googlenet
from inception.data import pipeline


class SyntheticSource:
  """`num_examples` examples in 10 classes, each a 64x64 JPEG; random access like an image folder or ArrayRecord."""
  random_access = True
  num_classes = 10

  def __init__(self, num_examples: int):
    self.n = num_examples
    self.jpeg = tf.io.encode_jpeg(np.random.RandomState(0).randint(0, 256, (64, 64, 3)).astype(np.uint8))

  def num_examples(self, split: str) -> int:
    return self.n

  def lookup(self, split: str):
    return lambda i: {'image_bytes': self.jpeg, 'label': tf.cast(i % 10, tf.int32)}

  @staticmethod
  def load(record):
    return record


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--num_examples', type=int, default=1_281_167)
  parser.add_argument('--steps', default='0,1000,200000,1000000')
  parser.add_argument('--batch_size', type=int, default=256)
  args = parser.parse_args()
  config = googlenet.get_config('mini')
  config.batch_size = args.batch_size
  source = SyntheticSource(args.num_examples)
  print(f'{args.num_examples} examples, global batch {args.batch_size}, process 0 of 1')
  for step in (int(s) for s in args.steps.split(',')):
    start = time.perf_counter()
    batch = next(pipeline.train_batches(config, process_index=0, process_count=1, start_step=step, source=source))
    seconds = time.perf_counter() - start
    epoch = step * args.batch_size / args.num_examples
    print(f'resume at step {step:>9} (epoch {epoch:7.2f}): first batch {batch["image"].shape} in {seconds:6.2f} s')


if __name__ == '__main__':
  main()

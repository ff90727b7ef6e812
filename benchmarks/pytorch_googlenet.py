"""The PyTorch reference for the CPU speed comparison of docs/performance.md: the published GoogLeNet, layer for layer
as inception/models/googlenet.py builds it (LRN, real 5x5 branches, Caffe's round-up pooling, two aux heads weighted
0.3, dropout 0.4 / 0.7), channels_last, SGD with momentum 0.9 and weight decay.

PyTorch is not a dependency of the project; run this with a Python that has torch:

  python benchmarks/pytorch_googlenet.py --mode=train|eval [--batch=32] [--image-size=224] [--steps=3] [--warmup=1]

train: forward, the three losses, backward and the SGD update per step; eval: the main head under inference_mode. The
last line is `images/s: X`, as `python -m inception.benchmark` prints it, so benchmarks/compare_pytorch.py can
alternate the two.
"""
import argparse
import time

import torch
from torch import nn
import torch.nn.functional as F

# (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj): the paper's Table 1.
WIDTHS = {
    '3a': (64, 96, 128, 16, 32, 32), '3b': (128, 128, 192, 32, 96, 64),
    '4a': (192, 96, 208, 16, 48, 64), '4b': (160, 112, 224, 24, 64, 64), '4c': (128, 128, 256, 24, 64, 64),
    '4d': (112, 144, 288, 32, 64, 64), '4e': (256, 160, 320, 32, 128, 128),
    '5a': (256, 160, 320, 32, 128, 128), '5b': (384, 192, 384, 48, 128, 128),
}


def conv(cin, cout, k, stride=1, padding=0):
  """Convolution with bias, then ReLU (the GoogLeNet unit)."""
  return nn.Sequential(nn.Conv2d(cin, cout, k, stride, padding), nn.ReLU(inplace=True))


class Inception(nn.Module):
  def __init__(self, cin, widths):
    super().__init__()
    c1, r3, c3, r5, c5, pp = widths
    self.b1 = conv(cin, c1, 1)
    self.b3 = nn.Sequential(conv(cin, r3, 1), conv(r3, c3, 3, padding=1))
    self.b5 = nn.Sequential(conv(cin, r5, 1), conv(r5, c5, 5, padding=2))
    self.bp = nn.Sequential(nn.MaxPool2d(3, 1, padding=1), conv(cin, pp, 1))
    self.out_channels = c1 + c3 + c5 + pp

  def forward(self, x):
    return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], 1)


class AuxHead(nn.Module):
  def __init__(self, cin, num_classes, tap_size):
    super().__init__()
    side = (tap_size - 5) // 3 + 1
    self.conv = conv(cin, 128, 1)
    self.fc = nn.Linear(128 * side * side, 1024)
    self.classifier = nn.Linear(1024, num_classes)

  def forward(self, x):
    x = self.conv(F.avg_pool2d(x, 5, 3, ceil_mode=True))
    x = F.dropout(F.relu(self.fc(torch.flatten(x, 1))), 0.7, self.training)
    return self.classifier(x)


class GoogLeNet(nn.Module):
  def __init__(self, num_classes=1000, image_size=224):
    super().__init__()
    lrn = lambda: nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
    pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)
    self.stem = nn.Sequential(conv(3, 64, 7, 2, 3), pool(), lrn(), conv(64, 64, 1), conv(64, 192, 3, padding=1),
                              lrn(), pool())
    blocks, cin = {}, 192
    for name, widths in WIDTHS.items():
      blocks[name] = Inception(cin, widths)
      cin = blocks[name].out_channels
    self.blocks = nn.ModuleDict(blocks)
    self.pool = pool()
    tap = image_size
    for _ in range(4):  # conv1 and three pools
      tap = (tap + 1) // 2
    self.aux_4a = AuxHead(blocks['4a'].out_channels, num_classes, tap)
    self.aux_4d = AuxHead(blocks['4d'].out_channels, num_classes, tap)
    self.fc = nn.Linear(cin, num_classes)

  def forward(self, x):
    x = self.stem(x)
    aux = []
    for name, block in self.blocks.items():
      if name in ('4a', '5a'):
        x = self.pool(x)
      x = block(x)
      if self.training and name in ('4a', '4d'):
        aux.append(getattr(self, f'aux_{name}')(x))
    x = F.dropout(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1), 0.4, self.training)
    return self.fc(x), aux


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--mode', choices=('train', 'eval'), default='train')
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--image-size', type=int, default=224)
  parser.add_argument('--num-classes', type=int, default=1000)
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--warmup', type=int, default=1)
  args = parser.parse_args()

  torch.manual_seed(0)
  model = GoogLeNet(args.num_classes, args.image_size).to(memory_format=torch.channels_last)
  images = torch.randn(args.batch, 3, args.image_size, args.image_size).to(memory_format=torch.channels_last)
  labels = torch.randint(0, args.num_classes, (args.batch,))
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=2e-4)

  def train_step():
    logits, aux = model(images)
    loss = F.cross_entropy(logits, labels) + 0.3 * sum(F.cross_entropy(a, labels) for a in aux)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()

  def eval_step():
    with torch.inference_mode():
      model(images)[0].softmax(-1)

  step = train_step if args.mode == 'train' else eval_step
  model.train(args.mode == 'train')
  for _ in range(args.warmup):
    step()
  start = time.perf_counter()
  for _ in range(args.steps):
    step()
  seconds = (time.perf_counter() - start) / args.steps
  print(f'pytorch {torch.__version__} {args.mode} step, googlenet float32 {args.image_size} px batch {args.batch}, '
        f'{torch.get_num_threads()} threads, channels_last')
  print(f'{seconds * 1e3:.0f} ms/step')
  print(f'images/s: {args.batch / seconds:.2f}')


if __name__ == '__main__':
  main()

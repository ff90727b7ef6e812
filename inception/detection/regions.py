"""The region classifier's training data: R-CNN's regions of the train and val splits, written as an image folder.

`write(config)` samples each image's regions (region_sampling.py) from its Selective Search proposals (proposals.py)
and its ground truth, warps them with context to the classifier's input (region_crops.py), and writes them as JPEG
files under `data.root` (`{workdir}/regions`): `train/<class>/` and `val/<class>/`, one folder per class plus the
background class. The training loop then reads them as any image folder (inception/data/sources.py), so fine-tuning
is an ordinary `inception.main` run: devices, hosts, checkpoints, preemption, EMA, sweeps and reports unchanged.

The folder is written once per setting: `settings.json` records what decided its contents, a second call with the same
settings does nothing, and one with other settings is refused (its run was trained on the old regions).
"""
import collections
import json
import time
from typing import Dict

import cv2
from etils import epath
import ml_collections
import numpy as np

from inception.detection import datasets
from inception.detection import image_check
from inception.detection import proposals as proposals_lib
from inception.detection import region_crops
from inception.detection import region_sampling
from inception.detection import selective_search
from inception.errors import UserError

SUBFOLDERS = (('train_split', 'train'), ('val_split', 'val'))  # the folder source's train/ and val/ layout


class RegionsError(UserError):
  """A regions folder that cannot be written or reused as asked; the message says why and what to do."""


def folder(config: ml_collections.ConfigDict) -> epath.Path:
  """Where the regions go: `data.root` with `{workdir}` filled in (the loop's folder source reads the same place)."""
  root = str(config.data.root)
  if not root or config.data.source != 'folder':
    raise RegionsError(f'--config.data.source={config.data.source!r}, data.root={root!r}: the region classifier '
                       f'reads its regions as an image folder; keep configs/detection.py\'s data.source=\'folder\' '
                       f'and data.root=\'{{workdir}}/regions\'.')
  return epath.Path(root.replace('{workdir}', str(config.workdir).rstrip('/')))


def settings(config: ml_collections.ConfigDict, class_names) -> Dict:
  """Everything that decides the folder's contents."""
  d = config.detection_data
  return {
      'detection_data': {'root': datasets.source(d), 'classes': list(class_names),
                         **{key: d[key] for key, _ in SUBFOLDERS}},
      'proposals': selective_search.Params.from_config(config.proposals).as_dict(),
      'regions': config.regions.to_dict(),
      'image_size': int(config.pp.image_size),
  }


def _class_folders(class_names, background: str):
  if background in class_names:
    raise RegionsError(f'--config.regions.background_name={background!r} is also one of the classes: pick another.')
  bad = [n for n in class_names if not n or '/' in n or n.startswith('.')]
  if bad:
    raise RegionsError(f'class names {bad} cannot name folders: rename them in --config.detection_data.classes.')
  return list(class_names) + [background]


def write(config: ml_collections.ConfigDict, log=print) -> Dict:
  """Writes the train and val regions (or finds them written with the same settings); returns the summary."""
  target = folder(config)
  rule = region_sampling.SamplingRule.from_config(config.regions)
  size = int(config.pp.image_size)
  padding = region_crops.context_padding(config.regions.context_padding, size)
  fill = str(config.regions.fill)
  if fill not in region_crops.FILLS:
    raise RegionsError(f'--config.regions.fill={fill!r}: expected one of {", ".join(region_crops.FILLS)}.')
  quality = int(config.regions.jpeg_quality)
  if not 0 <= quality <= 100:
    raise RegionsError(f'--config.regions.jpeg_quality={quality}: expected 0 to 100 (OpenCV\'s JPEG quality).')
  summary_file = target / 'summary.json'
  splits = {}
  for key, sub in SUBFOLDERS:
    data, run, _ = proposals_lib.build(config, config.detection_data[key])
    splits[sub] = (data, run)
  class_names = splits['train'][0].class_names
  wanted = json.loads(json.dumps(settings(config, class_names)))  # as settings.json reads back: lists, not tuples
  if (target / 'settings.json').exists():
    found = json.loads((target / 'settings.json').read_text())
    if found != wanted:
      changed = sorted(k for k in set(found) | set(wanted) if found.get(k) != wanted.get(k))
      raise RegionsError(f'{target} holds regions written with other settings (changed: {", ".join(changed)}), and '
                         f'a run trained on them may be in {config.workdir}. Use a new --config.workdir, or delete '
                         f'{target} (and the run trained on it) to write them again.')
    log(f'Regions already written in {target} with these settings.')
    return json.loads(summary_file.read_text())
  names = _class_folders(class_names, config.regions.background_name)
  partial = epath.Path(f'{target}.partial')
  if partial.exists():  # an earlier call that did not finish
    partial.rmtree()
  summary = {'folder': str(target), 'settings': wanted, 'splits': {}}
  for index, (key, sub) in enumerate(SUBFOLDERS):
    data, run = splits[sub]
    start = time.perf_counter()
    rng = np.random.default_rng([int(config.regions.seed), index])
    chosen = {}  # image id -> (boxes, labels); images with ground truth first, so the others can take their mean
    for record in sorted(data.records, key=lambda r: not len(r.boxes)):
      if record.image_id not in run.boxes:  # no proposals (the image did not read): proposal_cache named and counted it
        continue
      fg = [int((labels < len(class_names)).sum()) for _, labels in chosen.values()]
      background = -1 if len(record.boxes) else rule.background_for(int(round(np.mean(fg))) if fg else 0)
      chosen[record.image_id] = region_sampling.sample(record, run.boxes[record.image_id], len(class_names), rule, rng,
                                                       background)
    counts, skipped = collections.Counter(), [r.image_id for r in data.records if r.image_id not in chosen]
    for name in names:
      (partial / sub / name).mkdir(parents=True, exist_ok=True)
    for image_id, image, (region_boxes, labels) in image_check.read_images(data.records, chosen, skipped):
      crops = region_crops.crop(image, region_boxes, size, padding, fill)
      for k, (pixels, label) in enumerate(zip(crops, labels)):
        ok, encoded = cv2.imencode('.jpg', cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
          raise RegionsError(f'OpenCV could not encode a region of {image_id} as JPEG.')
        (partial / sub / names[label] / f'{image_id}-{k:04d}.jpg').write_bytes(encoded.tobytes())
        counts[names[label]] += 1
    total = sum(counts.values())
    foreground = total - counts[names[-1]]
    summary['splits'][sub] = {
        'split': data.split, 'images': len(data.records), 'images_skipped': skipped, 'regions': total,
        'per_class': {n: counts[n] for n in names}, 'foreground_share': foreground / total if total else 0.0,
        'seconds': time.perf_counter() - start}
    log(f'{sub}: {total:,} regions from {len(data.records) - len(skipped):,} images '
        f'({", ".join(f"{n} {counts[n]:,}" for n in names)}; {summary["splits"][sub]["foreground_share"]:.1%} '
        f'foreground), {summary["splits"][sub]["seconds"]:.1f} s.'
        + (f' Skipped {len(skipped)} images without proposals or pixels: {", ".join(skipped[:3])}.' if skipped else ''))
  (partial / 'settings.json').write_text(json.dumps(wanted, indent=2))
  (partial / 'summary.json').write_text(json.dumps(summary, indent=2))
  if target.exists():
    target.rmtree()
  partial.rename(target)
  log(f'Wrote the regions to {target}.')
  return summary

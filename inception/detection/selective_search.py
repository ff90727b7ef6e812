"""Selective Search proposals (Uijlings et al. 2013) for one image, set up as R-CNN's "fast" mode from the config.

The package: OpenCV contrib's `cv2.ximgproc.segmentation` (opencv-contrib-python-headless), not PyPI's
`selective-search`. OpenCV is maintained and released several times a year, its grouping is C++ (a few seconds for a
640x480 image on one core, where the pure-Python package takes tens), and its low-level API takes every setting of
R-CNN's `selective_search_boxes.m` exactly: the colour spaces (`addImage`), one Felzenszwalb segmentation per k with
its own sigma and minimum segment size (`addGraphSegmentation`; R-CNN sets minSize = k) and the two merging
strategies (`addStrategy`: colour+texture+size+fill and texture+size+fill). `selective-search` (last release 2022)
only offers its fixed 'single'/'fast'/'quality' modes, so the doubled superpixel size (k in {100, 200}) would need its
undocumented internals, and it starts its own joblib pool inside ours.

Not the MATLAB code itself: OpenCV has its own histograms (8-bit HSV and Lab), so its boxes are close to, not
identical with, R-CNN's. It removes duplicate boxes and orders the rest by the paper's pseudo-random ranking (a
region's hierarchy level times a random number); the set of boxes is deterministic, their order is not (OpenCV's
generator cannot be seeded from Python). As in R-CNN, boxes under `min_box_size` pixels wide or high are dropped.
"""
import dataclasses
import hashlib
import json
from typing import Tuple

import cv2
import numpy as np

from inception.config_checks import ConfigError

_segmentation = cv2.ximgproc.segmentation

# The colour spaces a segmentation and its similarities can run in (R-CNN's fast mode: hsv and lab).
COLOR_CONVERSIONS = {'hsv': cv2.COLOR_RGB2HSV, 'lab': cv2.COLOR_RGB2Lab, 'rgb': None}
# One letter per similarity a merging strategy sums (R-CNN's fast mode: 'CTSF' and 'TSF').
SIMILARITIES = {
    'C': _segmentation.createSelectiveSearchSegmentationStrategyColor,
    'T': _segmentation.createSelectiveSearchSegmentationStrategyTexture,
    'S': _segmentation.createSelectiveSearchSegmentationStrategySize,
    'F': _segmentation.createSelectiveSearchSegmentationStrategyFill,
}


@dataclasses.dataclass(frozen=True)
class Params:
  """Every setting that changes the boxes (the config's `proposals` keys of the same names); ConfigError if one is
  unusable. `key()` names the setting (and the OpenCV version) in cache paths."""
  color_spaces: Tuple[str, ...]
  ks: Tuple[int, ...]
  min_segment_size_factor: float
  sigma: float
  strategies: Tuple[str, ...]
  min_box_size: int

  def __post_init__(self):
    def bad(key, allowed):
      raise ConfigError(f'--config.proposals.{key}={getattr(self, key)!r}: expected {allowed}.')
    if not self.color_spaces or any(c not in COLOR_CONVERSIONS for c in self.color_spaces):
      bad('color_spaces', f'one or more of {", ".join(map(repr, COLOR_CONVERSIONS))}, e.g. (\'hsv\', \'lab\')')
    if not self.ks or any(not isinstance(k, int) or k <= 0 for k in self.ks):
      bad('ks', 'one or more integers > 0, e.g. (100, 200)')
    if not self.min_segment_size_factor >= 0:
      bad('min_segment_size_factor', 'a number >= 0 (1.0: R-CNN\'s minimum segment size = k)')
    if not self.sigma >= 0:
      bad('sigma', 'a number >= 0, e.g. 0.8')
    if not self.strategies or any(not s or set(s) - set(SIMILARITIES) or len(set(s)) != len(s)
                                  for s in self.strategies):
      bad('strategies', 'one or more strings of distinct letters from C (colour), T (texture), S (size), F (fill), '
                        'e.g. (\'CTSF\', \'TSF\')')
    if not isinstance(self.min_box_size, int) or self.min_box_size < 1:
      bad('min_box_size', 'an integer >= 1, e.g. 20')

  @classmethod
  def from_config(cls, proposals) -> 'Params':
    """The settings of the config's `proposals` group."""
    return cls(tuple(str(c).lower() for c in proposals.color_spaces), tuple(proposals.ks),
               float(proposals.min_segment_size_factor), float(proposals.sigma), tuple(proposals.strategies),
               proposals.min_box_size)

  def as_dict(self) -> dict:
    """The settings as JSON, with the implementation they run on."""
    return {**dataclasses.asdict(self), 'implementation': f'opencv {cv2.__version__} ximgproc'}

  def key(self) -> str:
    """16 hex digits of the settings' and the implementation's hash: a changed setting gets other cache files."""
    return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]


def propose(image: np.ndarray, params: Params) -> np.ndarray:
  """Selective Search on one uint8 RGB image: float64 [N, 4] boxes (x0, y0, x1, y1) in continuous pixels (records.py)
  inside the image, at least `params.min_box_size` wide and high, in OpenCV's ranked order."""
  image = np.ascontiguousarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
    raise ValueError(f'propose: expected a uint8 [H, W, 3] RGB image, got {image.dtype} {image.shape}.')
  search = _segmentation.createSelectiveSearchSegmentation()
  search.clearImages()
  search.clearGraphSegmentations()
  search.clearStrategies()
  for space in params.color_spaces:
    code = COLOR_CONVERSIONS[space]
    search.addImage(image if code is None else cv2.cvtColor(image, code))
  for k in params.ks:
    min_size = int(round(params.min_segment_size_factor * k))
    search.addGraphSegmentation(_segmentation.createGraphSegmentation(params.sigma, float(k), min_size))
  for letters in params.strategies:
    parts = [SIMILARITIES[letter]() for letter in letters]
    search.addStrategy(parts[0] if len(parts) == 1 else
                       _segmentation.createSelectiveSearchSegmentationStrategyMultiple(*parts))
  rects = np.asarray(search.process(), np.float64).reshape(-1, 4)  # (x, y, w, h): w pixel columns from x
  boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
  keep = (rects[:, 2] >= params.min_box_size) & (rects[:, 3] >= params.min_box_size)
  return boxes[keep]

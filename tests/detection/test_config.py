"""configs/detection.py drives the detection modules: its keys are the arguments they take (no defaults there)."""
import numpy as np
import pytest

from inception import config_checks
from inception.detection import boxes as box_ops
from inception.detection import mean_ap
from inception.detection import nms
from inception.detection import voc
from inception.detection import warp
from inception.detection.records import Detections


def test_bccd_variant_reads_the_data_and_evaluates_nms_output():
  c = config_checks.load_config('configs/detection.py:bccd')
  d = c.detection_data
  split = voc.load_split(d.root, d.test_split, d.classes, d.decode_images)
  assert split.class_names == ('RBC', 'WBC', 'Platelets') and len(split.records) == 72
  # Each box scored for its class, plus a shifted near-duplicate a little lower; NMS at the config's IoU.
  rng = np.random.default_rng(0)
  detections = {}
  for r in split.records:
    boxes = np.concatenate([r.boxes, r.boxes + 2])
    scores = np.zeros([len(boxes), len(split.class_names)])
    scores[np.arange(len(boxes)), np.tile(r.labels, 2)] = np.concatenate([rng.uniform(0.5, 1, len(r.labels))] * 2)
    scores[len(r.labels):] *= 0.9
    kept = nms.per_class_nms(boxes, scores, c.detect.nms_iou_threshold)
    real = kept.scores > 0
    detections[r.image_id] = Detections(kept.boxes[real], kept.scores[real], kept.labels[real])
    for label in range(len(split.class_names)):
      mine = kept.boxes[real][kept.labels[real] == label]
      assert (np.triu(box_ops.iou_matrix(mine, mine), 1) <= c.detect.nms_iou_threshold).all()
  result = mean_ap.evaluate(split.records, detections, split.class_names, **c.evaluation)
  # WBC and Platelets boxes never overlap each other by 0.3; some touching red cells do, and NMS keeps one of each pair.
  assert result['classes']['WBC']['ap'] == result['classes']['Platelets']['ap'] == 1.0
  assert 0.9 < result['classes']['RBC']['ap'] < 1.0
  window, placed = warp.visible_windows(split.records[0].boxes, 640, 480, 224, c.regions.context_padding)
  assert window.shape == placed.shape == (len(split.records[0].labels), 4)


def test_unknown_variant():
  with pytest.raises(config_checks.ConfigError, match="known: '', 'voc', 'bccd'"):
    config_checks.load_config('configs/detection.py:coco')

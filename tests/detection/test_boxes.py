"""Tests for inception/detection/boxes.py: IoU against the VOC devkit's formula and pycocotools, clipping, areas."""
import numpy as np
from pycocotools import mask as coco_mask

from inception.detection import boxes as box_ops


def test_iou_hand_cases():
  a = [[0, 0, 2, 2]]
  np.testing.assert_allclose(box_ops.iou_matrix(a, [[0, 0, 2, 2], [1, 0, 3, 2], [2, 0, 4, 2], [0, 0, 1, 1],
                                                   [5, 5, 5, 9]]), [[1, 1 / 3, 0, 1 / 4, 0]])
  assert box_ops.iou_matrix([[3, 3, 3, 3]], [[3, 3, 3, 3]]).tolist() == [[0.0]]  # two points: 0, not NaN
  assert box_ops.iou_matrix(np.zeros([0, 4]), a).shape == (0, 1)
  np.testing.assert_array_equal(box_ops.area([[0, 0, 2, 3], [4, 4, 2, 9]]), [6, 0])


def test_iou_is_the_voc_devkits_on_inclusive_pixel_boxes():
  """VOCevaldet adds 1 to widths of 1-based inclusive boxes; records shift xmin, ymin by -1 (voc.py) and do not."""
  rng = np.random.default_rng(0)
  voc = np.sort(rng.integers(1, 60, size=(40, 2, 2)), axis=1).transpose(0, 2, 1).reshape(40, 4)  # xmin ymin xmax ymax
  gt, det = voc[:20], voc[20:]
  devkit = np.zeros([20, 20])
  for i, bb in enumerate(det):
    for j, bbgt in enumerate(gt):
      iw = min(bb[2], bbgt[2]) - max(bb[0], bbgt[0]) + 1
      ih = min(bb[3], bbgt[3]) - max(bb[1], bbgt[1]) + 1
      if iw > 0 and ih > 0:
        ua = (bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1) + (bbgt[2] - bbgt[0] + 1) * (bbgt[3] - bbgt[1] + 1) - iw * ih
        devkit[i, j] = iw * ih / ua
  shift = np.array([-1, -1, 0, 0])
  np.testing.assert_allclose(box_ops.iou_matrix(det + shift, gt + shift), devkit, rtol=0, atol=1e-15)


def test_iou_is_pycocotools():
  rng = np.random.default_rng(1)
  xy = rng.uniform(0, 100, size=(30, 2))
  wh = rng.uniform(0.5, 60, size=(30, 2))
  boxes = np.concatenate([xy, xy + wh], axis=1)
  coco = coco_mask.iou(np.concatenate([xy, wh], 1)[:12].tolist(), np.concatenate([xy, wh], 1)[12:].tolist(), [0] * 18)
  np.testing.assert_allclose(box_ops.iou_matrix(boxes[:12], boxes[12:]), coco, rtol=0, atol=1e-12)
  ious = box_ops.iou_matrix(boxes, boxes)
  np.testing.assert_allclose(ious, ious.T)
  np.testing.assert_allclose(np.diag(ious), 1)


def test_clip():
  np.testing.assert_array_equal(box_ops.clip([[-5, 2, 50, 9], [41, 31, 60, 70]], 40, 30),
                                [[0, 2, 40, 9], [40, 30, 40, 30]])
  assert box_ops.area(box_ops.clip([[41, 31, 60, 70]], 40, 30)).tolist() == [0]

"""Tests for inception/detection/mean_ap.py: the curves against pycocotools at IoU 0.5, and the JSON result.

What is compared with pycocotools: COCOeval (bbox, one IoU threshold 0.5, one area range, no detection limit) gives,
per class, 101 precisions at recalls 0, 0.01, ..., 1 and the final recall. The same numbers are computed here from
this package's matched curves with COCO's interpolation (its precision envelope sampled at the first rank reaching
each recall). They agree to rounding (COCO adds 2.2e-16 to its precision's denominator) wherever both match
detections the same way: 'ilsvrc' matching on boxes over ~25 px (its threshold is then 0.5, and it takes the best
free box, as COCO does), and 'voc' matching where no two boxes of a class in one image overlap (a VOC detection whose
best box is taken is a false positive; COCO moves on to the next box). The package's AP is VOC's all-point area,
not COCO's 101-point mean; these differ by at most 1/101 (`test_voc_and_coco_ap_differ_by_interpolation`), and are
equal for a class of exactly 101 boxes, where the AP itself is compared with pycocotools'.
"""
import contextlib
import io
import json
import pathlib

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from inception.detection import average_precision
from inception.detection import mean_ap
from inception.detection import voc
from inception.detection.records import Detections
from inception.detection.records import ImageRecord

CLASSES = ('a', 'b', 'c')
BCCD = pathlib.Path(__file__).resolve().parents[2] / 'data' / 'bccd'


def _scene(seed, images=40, overlapping=True):
  """Records and detections of 3 classes on 640x480 images: boxes 30-140 px, anywhere (overlapping, with some
  near-duplicate pairs) or one per cell of a 4x3 grid per class; detections jittered around them (IoU on both sides
  of 0.5), some of another class, plus boxes at random; scores without ties."""
  rng = np.random.default_rng(seed)
  records, detections = [], {}
  for i in range(images):
    boxes, labels = [], []
    for c in range(len(CLASSES)):
      n = int(rng.integers(0, 5))
      if overlapping:
        xy = rng.uniform(0, 480, (n, 2))
        wh = rng.uniform(30, 140, (n, 2))
        new = np.concatenate([xy, xy + wh], 1)
        if n and rng.random() < 0.5:
          new = np.concatenate([new, new[:1] + rng.uniform(-8, 8, 4)])
      else:
        cells = rng.choice(12, n, replace=False)
        xy = np.stack([cells % 4 * 160, cells // 4 * 160], 1) + rng.uniform(0, 15, (n, 2))
        new = np.concatenate([xy, xy + rng.uniform(30, 140, (n, 2))], 1)
      boxes.extend(new)
      labels.extend([c] * len(new))
    boxes = np.array(boxes).reshape(-1, 4)
    labels = np.array(labels, np.int32)
    records.append(ImageRecord(f'img{i}', f'img{i}.jpg', 640, 480, boxes, labels, tuple(CLASSES[l] for l in labels),
                               np.zeros(len(labels), bool)))
    det_boxes, det_labels = [], []
    for box, label in zip(boxes, labels):
      size = box[2:] - box[:2]
      for _ in range(int(rng.integers(0, 4))):
        det_boxes.append(box + rng.normal(0, 0.12, 4) * np.tile(size, 2))
        det_labels.append(label if rng.random() < 0.9 else int(rng.integers(0, len(CLASSES))))
    for _ in range(int(rng.integers(0, 3))):
      xy = rng.uniform(0, 480, 2)
      det_boxes.append(np.concatenate([xy, xy + rng.uniform(20, 140, 2)]))
      det_labels.append(int(rng.integers(0, len(CLASSES))))
    if det_boxes or rng.random() < 0.5:  # some images have no entry at all
      detections[f'img{i}'] = Detections(np.array(det_boxes).reshape(-1, 4), rng.random(len(det_boxes)),
                                         np.array(det_labels, np.int32))
  return records, detections


def _pycocotools(records, detections):
  """COCOeval at IoU 0.5 alone: precision [101, K] at its recall thresholds, recall [K], the thresholds [101]."""
  xywh = lambda b: [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]  # noqa: E731
  gt = {'images': [{'id': i + 1, 'width': r.width, 'height': r.height} for i, r in enumerate(records)],
        'categories': [{'id': c + 1, 'name': n} for c, n in enumerate(CLASSES)], 'annotations': []}
  results = []
  for i, r in enumerate(records):
    for box, label in zip(r.boxes, r.labels):
      gt['annotations'].append({'id': len(gt['annotations']) + 1, 'image_id': i + 1, 'category_id': int(label) + 1,
                                'bbox': xywh(box), 'area': float((box[2] - box[0]) * (box[3] - box[1])),
                                'iscrowd': 0})
    d = detections.get(r.image_id)
    for box, score, label in zip(*(d.boxes, d.scores, d.labels) if d else ((), (), ())):
      results.append({'image_id': i + 1, 'category_id': int(label) + 1, 'bbox': xywh(box), 'score': float(score)})
  with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
    coco_gt = COCO()
    coco_gt.dataset = gt
    coco_gt.createIndex()
    coco_eval = COCOeval(coco_gt, coco_gt.loadRes(results), 'bbox')
    coco_eval.params.iouThrs = np.array([0.5])
    coco_eval.params.areaRng = [[0, 1e10]]
    coco_eval.params.areaRngLbl = ['all']
    coco_eval.params.maxDets = [10_000]
    coco_eval.evaluate()
    coco_eval.accumulate()
  return coco_eval.eval['precision'][0, :, :, 0, 0], coco_eval.eval['recall'][0, :, 0, 0], coco_eval.params.recThrs


def _coco_interpolated(curve, recall_thresholds):
  """COCO's 101 precisions from a curve: the precision envelope at the first rank whose recall reaches each threshold
  (0 beyond the curve's last recall)."""
  envelope = np.maximum.accumulate(curve.precision[::-1])[::-1]
  ranks = np.searchsorted(curve.recall, recall_thresholds, side='left')
  return np.where(ranks < len(envelope), envelope[np.minimum(ranks, len(envelope) - 1)], 0.0) if len(envelope) else (
      np.zeros(len(recall_thresholds)))


def _compare(seed, overlapping, matching):
  """Per class: max |our COCO-interpolated precision - pycocotools'|, and whether the final recalls are equal."""
  records, detections = _scene(seed, overlapping=overlapping)
  for r in records:  # every box over ~25 px: ILSVRC's threshold is 0.5 throughout
    assert (average_precision.ilsvrc_thresholds(r.boxes, 0.5) == 0.5).all()
  curves = mean_ap.class_curves(records, detections, len(CLASSES), 0.5, matching)
  precision, recall, thresholds = _pycocotools(records, detections)
  return ([float(np.abs(_coco_interpolated(c, thresholds) - precision[:, k]).max()) for k, c in enumerate(curves)],
          [float(c.recall[-1]) if len(c.recall) else 0.0 for c in curves] == recall.tolist())


@pytest.mark.parametrize('seed', range(3))
def test_ilsvrc_matching_is_pycocotools_at_iou_half(seed):
  differences, same_recall = _compare(seed, overlapping=True, matching='ilsvrc')
  assert max(differences) < 1e-12 and same_recall


@pytest.mark.parametrize('seed', range(3))
def test_voc_matching_is_pycocotools_where_boxes_do_not_overlap(seed):
  differences, same_recall = _compare(seed, overlapping=False, matching='voc')
  assert max(differences) < 1e-12 and same_recall


def test_voc_matching_differs_from_pycocotools_on_overlapping_boxes():
  """The comparison can fail: on overlapping boxes, VOC's rule leaves duplicates false where COCO's moves on."""
  differences, _ = _compare(0, overlapping=True, matching='voc')
  assert max(differences) > 0.01


def test_voc_and_coco_ap_differ_by_interpolation():
  """VOC's AP integrates the non-increasing envelope f over [0, 1]; COCO's averages f(k/100), k = 0..100. For such f,
  (1/100) sum_{k=1..100} f(k/100) <= integral <= (1/100) sum_{k=0..99} f(k/100), so |COCO - VOC| <= 1/101."""
  for seed in range(3):
    records, detections = _scene(seed, overlapping=True)
    precision, _, _ = _pycocotools(records, detections)
    result = mean_ap.evaluate(records, detections, CLASSES, 0.5, 'ilsvrc')
    for k, name in enumerate(CLASSES):
      assert abs(result['classes'][name]['ap'] - precision[:, k].mean()) <= 1 / 101


@pytest.mark.parametrize('seed', range(3))
def test_with_101_boxes_a_class_has_the_same_ap_in_voc_and_coco(seed):
  """With 101 boxes, recall moves in steps of 1/101 and COCO's f(k/100) is the envelope at step k + 1 (k >= 1; at
  k = 0 the envelope's maximum, its value at step 1): its 101-point mean is VOC's all-point sum, term for term. So
  here the package's AP itself is compared with pycocotools' AP at IoU 0.5."""
  records, detections = _scene(seed, images=80, overlapping=False)
  for c in range(len(CLASSES)):  # drop boxes (and their images' detections stay) until each class has 101
    excess = sum(int((r.labels == c).sum()) for r in records) - 101
    assert excess >= 0
    for i, r in enumerate(records):
      drop = np.flatnonzero(r.labels == c)[:excess]
      excess -= len(drop)
      keep = np.setdiff1d(np.arange(len(r.labels)), drop)
      records[i] = ImageRecord(r.image_id, r.path, r.width, r.height, r.boxes[keep], r.labels[keep],
                               tuple(np.array(r.names)[keep]), r.difficult[keep])
  precision, _, _ = _pycocotools(records, detections)
  result = mean_ap.evaluate(records, detections, CLASSES, 0.5, 'voc')
  for k, name in enumerate(CLASSES):
    assert result['classes'][name]['num_ground_truth'] == 101
    assert abs(result['classes'][name]['ap'] - precision[:, k].mean()) < 1e-12


def test_evaluate_result_is_json_with_counts_and_mean():
  records, detections = _scene(5)
  records.append(ImageRecord('hard', 'hard.jpg', 64, 64, np.array([[0, 0, 30, 30.0]]), np.array([2], np.int32),
                             ('c',), np.array([True])))
  result = json.loads(json.dumps(mean_ap.evaluate(records, detections, CLASSES + ('d',), 0.5, 'voc')))
  assert result['classes']['d'] == {'ap': None, 'num_ground_truth': 0, 'num_difficult': 0, 'num_detections': 0,
                                    'true_positives': 0, 'false_positives': 0, 'ignored_on_difficult': 0,
                                    'recall': None}
  assert result['classes_without_ground_truth'] == ['d']
  assert result['mAP'] == pytest.approx(np.mean([result['classes'][n]['ap'] for n in CLASSES]))
  for c, name in enumerate(CLASSES):
    counts = result['classes'][name]
    assert counts['num_ground_truth'] == sum(int((r.labels[~r.difficult] == c).sum()) for r in records)
    assert counts['num_detections'] == sum(int((d.labels == c).sum()) for d in detections.values())
    assert counts['true_positives'] + counts['false_positives'] + counts['ignored_on_difficult'] == (
        counts['num_detections'])
  assert result['classes']['c']['num_difficult'] == 1
  assert (result['matching'], result['iou_threshold'], result['num_images']) == ('voc', 0.5, len(records))
  with pytest.raises(ValueError, match='not in the ground truth'):
    mean_ap.evaluate(records, {'elsewhere': Detections.empty()}, CLASSES, 0.5, 'voc')


def test_bccd_ground_truth_as_detections_scores_one_and_misses_cost():
  split = voc.load_split(str(BCCD), 'test', ('RBC', 'WBC', 'Platelets'), decode_images=False)
  rng = np.random.default_rng(0)
  perfect = {r.image_id: Detections(r.boxes, rng.random(len(r.labels)), r.labels) for r in split.records}
  for matching in average_precision.MATCHING:
    assert mean_ap.evaluate(split.records, perfect, split.class_names, 0.5, matching)['mAP'] == 1.0
  # Every WBC box of the first half of the images only: WBC's AP is its recall, the share of boxes found.
  half = {r.image_id: Detections(r.boxes[r.labels == 1], np.ones(int((r.labels == 1).sum())), r.labels[r.labels == 1])
          for r in split.records[:36]}
  result = mean_ap.evaluate(split.records, half, split.class_names, 0.5, 'voc')['classes']
  assert result['WBC']['ap'] == pytest.approx(result['WBC']['recall']) and 0 < result['WBC']['recall'] < 1
  assert result['RBC']['ap'] == 0.0

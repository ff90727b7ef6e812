"""Scoring proposals: batches packed across images and put back per image, every image read once for an ensemble,
and the run's classes found by name."""
import numpy as np
from PIL import Image
import pytest

from inception.detection import image_check
from inception.detection import scoring
from inception.detection.records import ImageRecord
from inception.errors import UserError


class MeanColourScorer(scoring.RegionScorer):
  """A RegionScorer whose 'network' returns each crop's mean red value and its batch number: no model to compile."""

  def __init__(self, batch_size: int):  # pylint: disable=super-init-not-called
    self.size, self.padding, self.fill, self.columns = 8, 0.0, 'edge', [0, 1]
    self.batch_size, self.batches = batch_size, []
    self._start_queue()

  def _predict(self, crops):
    assert len(crops) <= self.batch_size
    self.batches.append(len(crops))
    return np.stack([crops[..., 0].mean(axis=(1, 2)), np.full(len(crops), len(self.batches))], axis=1)


def _image(value):
  pixels = np.zeros([20, 30, 3], np.uint8)
  pixels[..., 0] = value
  return pixels


def test_batches_run_across_images_and_come_back_to_each_image_in_order():
  scorer = MeanColourScorer(batch_size=4)
  counts = {'a': 3, 'b': 0, 'c': 6, 'd': 2}
  boxes = {i: np.tile([[2.0, 2.0, 12.0, 12.0]], (n, 1)) for i, n in counts.items()}
  for k, i in enumerate(counts):
    scorer.add(i, _image(10 * (k + 1)), boxes[i])
  out = scorer.finish()
  assert scorer.batches == [4, 4, 3]  # 11 regions: two full batches, then the rest at the end
  assert {i: p.shape for i, p in out.items()} == {i: (n, 2) for i, n in counts.items()}
  assert out['a'][:, 0].tolist() == [10] * 3 and out['c'][:, 0].tolist() == [30] * 6 and out['d'][:, 0].tolist() == [40] * 2
  assert out['c'][:, 1].tolist() == [1, 2, 2, 2, 2, 3]  # c's regions spread over the three batches, in order
  assert scorer.finish() == {}  # finish hands everything over once


def test_an_ensemble_reads_each_image_once_and_every_run_scores_every_box(tmp_path, monkeypatch):
  records = []
  for k, name in enumerate(('x', 'y', 'broken')):
    path = tmp_path / f'{name}.png'
    if name == 'broken':
      path.write_bytes(b'no png')
    else:
      Image.fromarray(_image(50 + k)).save(path)
    records.append(ImageRecord(name, str(path), 30, 20, np.zeros([0, 4]), np.zeros([0], np.int32), (),
                               np.zeros([0], bool)))
  boxes = {n: np.array([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 25.0, 15.0]]) for n in ('x', 'y', 'broken')}
  reads = []
  read_rgb = image_check.read_rgb
  monkeypatch.setattr(image_check, 'read_rgb', lambda path: reads.append(str(path)) or read_rgb(path))
  scorers = [MeanColourScorer(batch_size=3), MeanColourScorer(batch_size=8)]
  scores, seconds, unread = scoring.score_runs(scorers, records, boxes)
  assert sorted(reads) == sorted(r.path for r in records)  # once each, not once per run
  assert len(unread) == 1 and unread[0].startswith('broken (')
  assert [sorted(s) for s in scores] == [['x', 'y']] * 2 and len(seconds) == 2
  for s in scores:
    assert s['x'][:, 0].tolist() == [50, 50] and s['y'][:, 0].tolist() == [51, 51]
  assert scorers[0].batches == [3, 1] and scorers[1].batches == [4]
  mean = scoring.ensemble(scores)
  assert mean['x'][:, 1].tolist() == [1.0, 1.0]  # run 0 batch 1 and run 1 batch 1
  assert mean['y'][:, 1].tolist() == [1.0, 1.5]  # y's second region is in run 0's second batch


def test_the_run_must_know_every_detection_class_and_the_background():
  assert scoring.class_columns(['background', 'WBC', 'RBC'], ['RBC', 'WBC'], 'background', 'w') == [2, 1]
  with pytest.raises(UserError, match=r"without \['Platelets'\]"):
    scoring.class_columns(['RBC', 'background'], ['RBC', 'Platelets'], 'background', 'w')
  with pytest.raises(UserError, match='without'):
    scoring.class_columns(['RBC'], ['RBC'], 'background', 'w')


def _records(tmp_path, names, broken=()):
  records = []
  for k, name in enumerate(names):
    path = tmp_path / f'{name}.png'
    if name in broken:
      path.write_bytes(b'no png')
    else:
      Image.fromarray(_image(10 + k)).save(path)
    records.append(ImageRecord(name, str(path), 30, 20, np.zeros([0, 4]), np.zeros([0], np.int32), (),
                               np.zeros([0], bool)))
  return records


def test_owners_cut_the_images_in_order_into_runs_of_about_equal_work():
  records = [ImageRecord(str(i), '', 30, 20, np.zeros([0, 4]), np.zeros([0], np.int32), (), np.zeros([0], bool))
             for i in range(6)]
  boxes = {str(i): np.zeros([n, 4]) for i, n in enumerate([99, 299, 9, 9, 9, 9])}
  assert scoring.owners(records, boxes, 1).tolist() == [0] * 6
  # Work 100 | 300 + 4 x 10, total 440: middles 50 | 250, 405, ... at 2 / 440 per unit.
  assert scoring.owners(records, boxes, 2).tolist() == [0, 1, 1, 1, 1, 1]
  assert scoring.owners(records, {str(i): np.zeros([9, 4]) for i in range(6)}, 3).tolist() == [0, 0, 1, 1, 2, 2]
  assert scoring.owners(records[:1], boxes, 4).tolist() == [2]  # one image: the process its middle falls to


def test_two_processes_shares_packed_and_gathered_give_what_one_process_scores(tmp_path):
  """What each of 2 processes scores of its own images, packed as the all-gather sends it and stacked as it returns,
  unpacks into one process's scores of every image (and the image that did not read, on whichever process)."""
  names = ['a', 'b', 'broken', 'c', 'd']
  records = _records(tmp_path, names, broken={'broken'})
  boxes = {n: np.tile([[0.0, 0.0, 10.0, 10.0]], (1 + 2 * k, 1)) for k, n in enumerate(names)}
  whole, _, unread = scoring.score_runs([MeanColourScorer(4), MeanColourScorer(8)], records, boxes)
  packs = []
  for p in range(2):
    part, _, _ = scoring.score_runs([MeanColourScorer(4), MeanColourScorer(8)], records, boxes, p, 2)
    assert 0 < len(part[0]) < 4 and sorted(part[0]) == sorted(part[1])  # a share each, the same for both runs
    packs.append(scoring.pack(part, records, boxes, p, 2, width=2))
  assert packs[0]['scores'].shape == packs[1]['scores'].shape == (2, max(1 + 3 + 5, 7 + 9), 2)
  gathered = {k: np.stack([packs[0][k], packs[1][k]]) for k in packs[0]}
  scores, unread_ids = scoring.unpack(gathered, records, boxes)
  assert unread_ids == ['broken'] and unread[0].startswith('broken (')
  for one, two in zip(whole, scores):
    assert sorted(one) == sorted(two) == ['a', 'b', 'c', 'd']
    for i in one:  # the mean red of each crop (column 0) is the same wherever it was scored
      np.testing.assert_array_equal(one[i][:, 0], two[i][:, 0])
      assert two[i].dtype == np.float64
  gathered['regions'][1, 0] += 1  # a host that holds another proposal count for image a
  with pytest.raises(UserError, match=r'different proposals for 1 images \(a\)'):
    scoring.unpack(gathered, records, boxes)

"""The detection results as a table in the layout of the paper's Tables 4 and 5: one row per approach (proposals and
models), with its proposals per image, box recall, mAP and per-class AP."""
from typing import Dict, List, Sequence


def _pct(x) -> str:
  return '-' if x is None else f'{100 * x:.1f}%'


def rows(result: Dict) -> List[Dict]:
  """The rows of `inception.detect evaluate`'s JSON: each proposal set with each single model, then the ensemble."""
  out = []
  for proposal_name, entry in result['proposals'].items():
    for model in entry['models']:
      out.append({'proposals': proposal_name, 'per_image': entry['recall']['proposals_per_image'],
                  'recall': entry['recall']['recall'], **model})
  return out


def markdown(result: Dict, class_names: Sequence[str]) -> str:
  """A Markdown table of rows(result)."""
  head = (['approach', 'proposals', 'per image', 'box recall', 'models', 'mAP'] + [f'AP {n}' for n in class_names])
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for row in rows(result):
    cells = [row['name'], row['proposals'], f'{row["per_image"]:,.0f}', _pct(row['recall']), str(row['num_models']),
             _pct(row['mAP'])] + [_pct(row['classes'][n]['ap']) for n in class_names]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)

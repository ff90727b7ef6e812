"""The paper's Table 3 for evaluated runs: models, crops, cost, top-1 and top-5 error, and the change against the
first model's single crop (the paper's "compared to base")."""
from typing import Dict, List, Sequence

from etils import epath

COLUMNS = ('models', 'model', 'crops', 'cost', 'top1_error', 'top5_error', 'top5_vs_base')


def table_rows(runs: Sequence, results: Dict) -> List[Dict]:
  """Rows for every (run, crops) and ('ensemble', crops) of `results` (keys as inception.evaluate makes them);
  cost is forward passes per image (models x crops), errors in percent."""
  base = results.get((0, 1))
  rows = []
  keys = sorted((k for k in results if k[0] != 'ensemble')) + sorted(k for k in results if k[0] == 'ensemble')
  for who, crops in keys:
    s = results[who, crops]
    ensemble = who == 'ensemble'
    models = len(runs) if ensemble else 1
    name = ('ensemble: ' + ' + '.join(_name(r) for r in runs)) if ensemble else _name(runs[who])
    top5_error = 100.0 * (1.0 - s['top5'])
    rows.append({'models': models, 'model': name, 'crops': crops, 'cost': models * crops,
                 'top1_error': 100.0 * (1.0 - s['top1']), 'top5_error': top5_error,
                 'top5_vs_base': None if base is None else top5_error - 100.0 * (1.0 - base['top5'])})
  return rows


def _name(run) -> str:
  folder = epath.Path(run.workdir).name or str(run.workdir)  # local or gs://; '.' has no name
  return f'{folder} ({run.config.model.name}, {run.config.pp.image_size} px)'


def _cell(key: str, value) -> str:
  if value is None:
    return 'base' if key == 'top5_vs_base' else ''
  if isinstance(value, float):
    return f'{value:+.2f}%' if key == 'top5_vs_base' else f'{value:.2f}%'
  return str(value)


def markdown(rows: Sequence[Dict]) -> str:
  """A Markdown table of `rows` (COLUMNS order); the base row reads 'base'."""
  head = '| ' + ' | '.join(COLUMNS) + ' |\n|' + '---|' * len(COLUMNS) + '\n'
  body = []
  for i, row in enumerate(rows):
    cells = [_cell(k, row[k]) if not (k == 'top5_vs_base' and i == 0) else 'base' for k in COLUMNS]
    body.append('| ' + ' | '.join(cells) + ' |')
  return head + '\n'.join(body) + '\n'


def csv(rows: Sequence[Dict]) -> str:
  """The same rows as CSV, full precision, errors in percent."""
  lines = [','.join(COLUMNS)]
  for row in rows:
    lines.append(','.join('"' + row[k].replace('"', "'") + '"' if isinstance(row[k], str)
                          else ('' if row[k] is None else repr(row[k])) for k in COLUMNS))
  return '\n'.join(lines) + '\n'

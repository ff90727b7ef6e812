"""What a reader left out or changed, and why: a count per reason with the first items named, as one log line.

A reader never drops an image or a box without adding it here, so the summary line accounts for everything it read.
"""
import collections
from typing import Dict, List, Mapping


class Tally:
  """Counts by reason; `reasons` maps each reason to the phrase the summary uses for it (e.g. 'malformed XML files')."""

  def __init__(self, reasons: Mapping[str, str], names_shown: int = 3):
    self.reasons = dict(reasons)
    self.names_shown = names_shown
    self._names: Dict[str, List[str]] = collections.defaultdict(list)

  def add(self, reason: str, name: str) -> None:
    """Records one item (an image or a box, named so a user can find it) under `reason`."""
    if reason not in self.reasons:
      raise KeyError(f'unknown reason {reason!r}; known: {", ".join(self.reasons)}.')
    self._names[reason].append(name)

  def count(self, reason: str) -> int:
    return len(self._names.get(reason, ()))

  def names(self, reason: str) -> List[str]:
    return list(self._names.get(reason, ()))

  def counts(self) -> Dict[str, int]:
    """Every reason's count, zeros included (ready for JSON)."""
    return {reason: self.count(reason) for reason in self.reasons}

  def describe(self, reasons) -> str:
    """'phrase: N (first names, ...)' for each of `reasons` with a count, joined by '; ', or 'none'."""
    parts = []
    for reason in reasons:
      names = self._names.get(reason)
      if names:
        shown = ', '.join(names[:self.names_shown]) + (f', and {len(names) - self.names_shown} more'
                                                        if len(names) > self.names_shown else '')
        parts.append(f'{self.reasons[reason]}: {len(names)} ({shown})')
    return '; '.join(parts) or 'none'

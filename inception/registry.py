"""A name -> object table, one per extension point (models, datasets, preprocessing, evaluators).

The config names things by string; a registry turns the string into the object and, for a typo, says which names exist.
"""
from typing import Any, Callable, Dict


class Registry:
  """Maps names to objects registered with the `register(name)` decorator."""

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: Dict[str, Any] = {}

  def register(self, name: str) -> Callable[[Any], Any]:
    def decorator(obj):
      if name in self._entries:
        raise ValueError(f'{self.kind} {name!r} is registered twice.')
      self._entries[name] = obj
      return obj
    return decorator

  def get(self, name: str) -> Any:
    if name not in self._entries:
      raise ValueError(f'Unknown {self.kind} {name!r}; known: {", ".join(sorted(self._entries))}.')
    return self._entries[name]

  def names(self):
    return sorted(self._entries)

  def __contains__(self, name: str) -> bool:
    return name in self._entries

"""Evaluators, found by name from `config.evaluators`; each one runs over the held-out split and returns scalars."""
from inception.registry import Registry

EVALUATORS = Registry('evaluator')

from inception.evaluators import classification  # noqa: E402,F401  (registers 'classification')
from inception.evaluators import multibox  # noqa: E402,F401  (registers 'multibox')

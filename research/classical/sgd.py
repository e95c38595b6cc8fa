"""GPICL's learned-algorithm baseline as a classical learner: online Adam on a small
MLP (models/learned_algorithms.py `SGDLearner`, hidden 128, lr 1e-3, its fixed
initialisation), one step per example in order. Untrained: it has no parameters.
(MAML, its meta-learned initialisation, is a trained run: evaluate it with the
GPICL experiment like any learner.)"""
from __future__ import annotations

from models import learned_algorithms

from research import classical


@classical.CLASSICAL.register("sgd", targets=("classes", "values"))
def sgd(x, y, *, num_classes: int):
  model = learned_algorithms.SGDLearner(num_classes=num_classes, hidden_size=128,
                                        learning_rate=1e-3)
  out = model.apply({}, x[None], y[None])[0]
  return out[:, 0] if classical.is_values(y) else out

"""DKVB's open evaluation: a trained stream model (`research.runs.load`) on any arrays.

`accuracy(run, x, y)` embeds raw inputs with the run's frozen encoder (the one its
seed's stream used), reads them through the model (DKVB: only the keys its
training selected, as in the stream's own evaluation) and returns the accuracy and
the class-balanced accuracy with standard errors over the examples.
"""
from __future__ import annotations

import numpy as np

from research import stats
from research.dkvb import stream as stream_lib


def accuracy(run, x, y, *, replica: int = 0) -> dict:
  """{"acc", "se", "balanced_acc", "balanced_se", "n"} of replica `replica` on (x, y)."""
  r = run.replica(replica) if run.config.train.num_seeds > 1 else run
  exp = r.experiment
  encoder = exp.objects["encoders"][replica]
  ps = r.frozen["per_seed"]
  z = encoder(np.asarray(x))
  stages = exp.info["stages"]
  pred = np.asarray(exp.objects["predict"](r.params, ps, z, np.int32(stages - 1)))
  y = np.asarray(y)
  right = (pred == y).astype(np.float64)
  acc, se, n = stats.mean_se(right)
  classes = np.unique(y)
  return {"acc": acc, "se": se, "n": n,
          "balanced_acc": stream_lib.balanced_accuracy(pred, y, classes),
          "balanced_se": stream_lib.balanced_accuracy_se(pred, y, classes)}

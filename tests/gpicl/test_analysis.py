"""Phase classifier, transition points and plateau length on synthetic curves."""
import math

import numpy as np
import pytest

from research.gpicl import analysis

LN10 = math.log(10)


def _metrics(seen, unseen):
  """Final metrics with linear ICL curves from (acc after 1, acc last)."""
  out = {}
  for name, (a1, last) in (("seen", seen), ("unseen", unseen)):
    curve = [0.1] + list(np.linspace(a1, last, 19))
    out.update({f"{name}/acc_curve": curve, f"{name}/acc_last": last, f"{name}/acc_after_1": a1})
  return out


@pytest.mark.parametrize("seen,unseen,phase", [
    ((0.95, 1.0), (0.1, 0.1), "memorisation"),           # Known after one example.
    ((0.2, 0.65), (0.1, 0.12), "task_identification"),   # Context picks a seen task.
    ((0.15, 0.6), (0.15, 0.55), "learning_to_learn"),    # Unseen learnt as well.
    ((0.1, 0.12), (0.1, 0.1), "none"),                   # Still on the plateau.
    ((0.15, 0.8), (0.12, 0.25), "task_identification"),  # Unseen gain < half the seen gain.
])
def test_classify_phase(seen, unseen, phase):
  assert analysis.classify_phase(_metrics(seen, unseen)) == phase


def test_classify_phase_without_curve_uses_scalars():
  m = {"seen/acc_last": 0.6, "seen/acc_after_1": 0.2, "unseen/acc_last": 0.55,
       "unseen/acc_after_1": 0.15}
  assert analysis.classify_phase(m) == "learning_to_learn"


def test_transition_points_per_seed_and_spread():
  n = [1, 16, 256, 4096, 65536] * 3
  seeds = [0] * 5 + [1] * 5 + [2] * 5
  p = ["memorisation", "memorisation", "task_identification", "learning_to_learn", "learning_to_learn",
       "memorisation", "task_identification", "task_identification", "task_identification",
       "learning_to_learn",
       # A noisy seed: an isolated L2L point at 16 tasks does not count as the transition.
       "memorisation", "learning_to_learn", "task_identification", "learning_to_learn",
       "learning_to_learn"]
  t = analysis.transition_points(n, p, seeds)
  l2l = t["learning_to_learn"]
  assert l2l["per_seed"] == {0: 12.0, 1: 16.0, 2: 12.0}
  assert l2l["mean"] == pytest.approx(40 / 3) and l2l["min"] == 12 and l2l["max"] == 16
  assert l2l["std"] == pytest.approx(np.std([12, 16, 12], ddof=1))
  assert t["task_identification"]["per_seed"] == {0: 8.0, 1: 4.0, 2: 4.0}


def test_transition_never_reached():
  t = analysis.transition_points([1, 4], ["memorisation", "memorisation"], [0, 0])
  assert t["learning_to_learn"]["per_seed"] == {0: None}
  assert t["learning_to_learn"]["n"] == 0 and t["learning_to_learn"]["mean"] is None


def test_plateau_length_synthetic():
  steps = np.arange(0, 2000, 50)
  # ln 10 (with noise) until step 600, then a decay.
  rng = np.random.default_rng(0)
  loss = np.where(steps < 600, LN10 + 0.01 * rng.standard_normal(steps.size),
                  LN10 - 0.0025 * (steps - 600))
  assert analysis.plateau_length(steps, loss, 10) == 650  # First step below ln10 - 0.1, for good.
  assert analysis.plateau_length(steps, np.full(steps.size, LN10), 10) is None  # Censored.
  # A dip that comes back is not an exit.
  dip = loss.copy()
  dip[3] = 1.0
  assert analysis.plateau_length(steps, dip, 10) == 650
  assert analysis.plateau_length(steps, loss, 10, margin=0.45) == 800


def test_plateau_uses_unbiased_loss_not_total():
  """With 50 % of each batch on memorised task 0 the total loss halves at once;
  the plateau is read off the unbiased sequences."""
  steps = np.arange(50, 1050, 50)
  unbiased = np.where(steps < 800, LN10, 1.5)
  total = 0.5 * unbiased + 0.5 * 0.05
  rows = [{"step": int(s), "loss": float(t), "loss_unbiased": float(u)}
          for s, t, u in zip(steps, total, unbiased)]
  assert analysis.plateau_from_rows(rows, 10) == 800
  assert analysis.plateau_length(steps, total, 10) == 50  # What the total loss would claim.


def test_group_mean_and_standard_error():
  rows = [{"n": 1, "v": 0.1}, {"n": 1, "v": 0.3}, {"n": 4, "v": 0.5}]
  g = analysis.group(rows, "n", "v")
  se = np.std([0.1, 0.3], ddof=1) / np.sqrt(2)
  assert g[0][0] == 1 and g[0][1] == pytest.approx(0.2) and g[0][2] == pytest.approx(se)
  assert g[0][3] == 2
  assert g[1][0] == 4 and g[1][1] == 0.5 and np.isnan(g[1][2]) and g[1][3] == 1


def test_vmapped_seeds_run_reads_as_one_run_per_seed(tmp_path):
  """A `train.num_seeds` run keeps each replica in seed_<s>/: the sweep analysis sees
  one row per seed, with the replica's own seed."""
  from experiments.gpicl import digits
  from research import train
  c = digits.get_config("tiny")
  c.train.num_seeds = 2
  final = train.run(c, str(tmp_path / "sweep" / "r"))
  assert final["seeds"] == [0, 1] and len(final["per_seed"]) == 2
  assert "unseen/acc_last_se" in final  # Mean ± standard error over the seeds.
  runs = analysis.load_sweep_dir(str(tmp_path / "sweep"))
  assert [r["config"]["seed"] for r in runs] == [0, 1]
  assert [analysis.summarise(r)["seed"] for r in runs] == [0, 1]
  assert runs[0]["final"]["unseen/acc_curve"] != runs[1]["final"]["unseen/acc_curve"]

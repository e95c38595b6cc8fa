r"""Plateau length under the paper's three interventions (paper Fig. 7/8):
batch size, Adam ε and the biased task distribution (a fraction of each batch on task 0).

  python -m launch.sweep experiments/gpicl/sweep_plateau.py --run

One axis at a time around the CPU-scale digits base (2^16 tasks, batch 128,
ε 1e-8, no bias). Plateau length = steps until `loss_unbiased` stays below
ln 10 − 0.1 (`research.gpicl.analysis.plateau_length`), logged by every run as
`plateau_steps` in final_metrics.json.

Paper: plateau length falls as a power law in batch size; smaller ε and the
biased distribution shorten or remove it. Measured here: experiments/gpicl/README.md.
"""
from experiments.gpicl import sweep_common

BATCH_SIZES = [32, 64, 128, 256]
EPS = [1e-6, 1e-8, 1e-16]
BIAS = [0.0, 0.25, 0.5]


def get_sweep(arg=None):
  spec, shared = sweep_common.base(arg)
  if arg == "tiny":
    return spec, [dict(shared, **{"train.batch_size": 8}),
                  dict(shared, **{"optimizer.eps": 1e-16, "tasks.bias_fraction": 0.25})]
  shared["eval.datasets"] = ("wine",)
  runs = [dict(shared, **{"train.batch_size": b}) for b in BATCH_SIZES]
  runs += [dict(shared, **{"optimizer.eps": e}) for e in EPS if e != 1e-8]
  runs += [dict(shared, **{"tasks.bias_fraction": f}) for f in BIAS if f]
  return spec, runs

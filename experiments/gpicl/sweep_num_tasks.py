r"""Phase transition: within-sequence improvement vs number of tasks (paper Fig. 3).

  python -m launch.sweep experiments/gpicl/sweep_num_tasks.py --run
  python -m launch.sweep experiments/gpicl/sweep_num_tasks.py --print   # for a cluster

Grid: num_tasks = 2^0, 2^3, 2^6, 2^8, 2^10, 2^12, 2^16 on CPU-scale digits (see
sweep_common.CPU), each run training seeds 0, 1, 2 in one vmapped step
(`train.num_seeds=3`; each seed's rows in <run>/seed_<s>/). Read with `research.gpicl.analysis` (phases and transition
points) or notebooks/gpicl.ipynb (figure a).

Paper (MNIST, model size 256): memorisation up to ≈ 2^7 tasks, task
identification ≈ 2^7–2^14, learning-to-learn from ≈ 2^15.
Measured here: see experiments/gpicl/README.md.
"""
from experiments.gpicl import sweep_common

NUM_TASKS = [2**k for k in (0, 3, 6, 8, 10, 12, 16)]


def get_sweep(arg=None):
  spec, shared = sweep_common.base(arg)
  if arg == "tiny":
    return spec, sweep_common.grid(dict(shared, **{"train.num_seeds": 2}),
                                   **{"tasks.num_tasks": [1, 2**16]})
  shared.update({"eval.datasets": ("wine",), "train.num_seeds": 3})
  return spec, sweep_common.grid(shared, **{"tasks.num_tasks": NUM_TASKS})

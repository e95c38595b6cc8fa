r"""Pool-size sweep (Raventós et al. 2023, Fig. 2): 2^1, 2^4, … 2^13 weight vectors and
fresh tasks, three seeds each (vmapped in one run); the extremes run first.

  python -m launch.sweep experiments/raventos/sweep_pool.py --run
  python -m launch.sweep experiments/raventos/sweep_pool.py --run --arg tiny
"""
POOL = [0] + [2**k for k in (1, 13, 7, 4, 10)]  # 0: fresh w every sequence.
CONFIG = "experiments/raventos/pool.py"


def get_sweep(arg=None):
  if arg == "tiny":
    return CONFIG + ":tiny", [{"families.linear_regression.num_tasks": k} for k in (2, 0)]
  if arg not in (None, ""):
    raise ValueError(f"sweep arg {arg!r}: use nothing or 'tiny'")
  return CONFIG, [{"families.linear_regression.num_tasks": k, "train.progress": False}
                  for k in POOL]

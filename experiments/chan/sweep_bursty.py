r"""Chan et al. 2022's two sweeps at CPU scale, three seeds each (vmapped in one run):
burstiness p ∈ {0, 0.5, 0.9, 1} with uniform classes, and the Zipf exponent
α ∈ {0, 1, 2} at p = 0.9 (α = 0 at p = 0.9 is shared).

  python -m launch.sweep experiments/chan/sweep_bursty.py --run
  python -m launch.sweep experiments/chan/sweep_bursty.py --run --arg tiny
"""
CONFIG = "experiments/chan/bursty.py"
BURSTY = [0.0, 0.5, 0.9, 1.0]
ZIPF = [1.0, 2.0]


def get_sweep(arg=None):
  if arg == "tiny":
    return CONFIG + ":tiny", [{"families.bursty.p_bursty": 0.0}, {"families.bursty.zipf_exponent": 1.0}]
  if arg not in (None, ""):
    raise ValueError(f"sweep arg {arg!r}: use nothing or 'tiny'")
  runs = [{"families.bursty.p_bursty": p} for p in BURSTY]
  runs += [{"families.bursty.p_bursty": 0.9, "families.bursty.zipf_exponent": z} for z in ZIPF]
  return CONFIG, [dict(r, **{"train.progress": False}) for r in runs]

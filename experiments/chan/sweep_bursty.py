r"""Chan et al. 2022's sweeps at CPU scale (experiments/chan/bursty.py: 1024 mnist1d
classes on 32 labels), three seeds each (vmapped in one run), 3000 steps:

  burstiness    p ∈ {0, 0.5, 0.9, 1}, uniform classes
  Zipf law      α ∈ {1, 2} at p = 0.9 (α = 0 is the p = 0.9 run above)
  classes       K ∈ {256, 3200} at p = 0.9 (K = 1024 above; Chan and Reddy: more classes
                favour in-context learning)
  labels        one label per class (Chan's labelling) at p = 0.9, K = 1024

  python -m launch.sweep experiments/chan/sweep_bursty.py --run
  python -m launch.sweep experiments/chan/sweep_bursty.py --run --arg tiny
"""
CONFIG = "experiments/chan/bursty.py"
BURSTY = [0.0, 0.5, 0.9, 1.0]
ZIPF = [1.0, 2.0]
CLASSES = [256, 3200]


def get_sweep(arg=None):
  if arg == "tiny":
    return CONFIG + ":tiny", [{"families.bursty.p_bursty": 0.0},
                              {"families.bursty.zipf_exponent": 1.0}]
  if arg not in (None, ""):
    raise ValueError(f"sweep arg {arg!r}: use nothing or 'tiny'")
  runs = [{"families.bursty.p_bursty": p} for p in BURSTY]
  runs += [{"families.bursty.zipf_exponent": z} for z in ZIPF]
  runs += [{"families.bursty.num_train_classes": k} for k in CLASSES]
  runs += [{"families.bursty.num_labels": 0, "data.num_classes": 1024}]
  return CONFIG, [dict(r, **{"train.progress": False}) for r in runs]

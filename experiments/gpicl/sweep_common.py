"""Shared pieces of the GPICL sweep files (`launch.sweep` loads those by path).

CPU scale: the default digits config shrunk so that one run takes about a minute
on the 2-core dev machine (1-layer transformer d 64, 20 examples per sequence);
`tiny` shrinks it further so a test can run a whole sweep.
"""
DIGITS = "experiments/gpicl/digits.py"

CPU = {
    "model.num_layers": 1,
    "data.seq_len": 20,
    "train.num_steps": 1000,
    "train.eval_every": 500,
    "train.log_every": 25,
    "train.checkpoint_every": 1000,
    "train.tensorboard": False,
    "train.progress": False,
}
# Overrides every tiny sweep run gets on top of the `:tiny` config.
TINY = {"train.num_steps": 4, "train.eval_every": 2, "train.log_every": 2, "peak_flops": 1e10,
        "train.checkpoint_every": 4}


def base(arg, learner=None, layout=None):
  """(config spec, shared overrides) for a sweep's `arg` (None or "tiny")."""
  if arg not in (None, "", "tiny"):
    raise ValueError(f"sweep arg {arg!r}: use nothing or 'tiny'")
  parts = ["tiny"] if arg == "tiny" else []
  if learner:
    parts.append(f"learner={learner}")
  if layout:
    parts.append(f"layout={layout}")
  spec = DIGITS + (":" + ",".join(parts) if parts else "")
  return spec, dict(TINY if arg == "tiny" else CPU)


def grid(shared, **axes):
  """Cartesian product of `axes` (dotted key -> list of values), each merged into `shared`."""
  runs = [dict(shared)]
  for key, values in axes.items():
    runs = [dict(r, **{key: v}) for r in runs for v in values]
  return runs

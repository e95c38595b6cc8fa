r"""Probes for the paper's token layout leaving the ln 10 plateau on the 2-core CPU.

  python -m launch.sweep experiments/gpicl/sweep_paper_layout.py --run --arg STAGE

Base: digits, `layout=paper` (token t = [x_t, onehot(y_{t-1})]), 2-layer d 64
transformer, 20 examples per sequence, batch 128, 2^16 tasks, Adam 1e-3, no bias.
Each run changes one or two things. STAGE picks a group of runs (each stage its
own directory, so adding a stage never renames another's runs):

  short   500 steps each: baseline, positional-embedding init std 1, lr 3e-3 (warm-up 50)
  probe   1500 steps each: wider model, PCA-16 inputs, 3 classes per sequence
  long    6000 steps: 2 classes per sequence throughout
  classes 6000 steps: classes-per-sequence curriculum 2 -> 10

Measured: experiments/gpicl/README.md (paper layout section).
"""
from experiments.gpicl import sweep_common

PAPER = {
    "data.seq_len": 20,
    "train.log_every": 25,
    "train.checkpoint_every": 1000,
    "train.tensorboard": False,
    "train.progress": False,
    "eval.datasets": ("wine",),
}


def _hold_classes(k, steps):
  """k classes per sequence for the whole run (a curriculum that never moves)."""
  return {"curriculum.classes_start": k, "curriculum.hold_steps": steps, "curriculum.steps": 1}


def stages():
  short = dict(PAPER, **{"train.num_steps": 500, "train.eval_every": 500})
  probe = dict(PAPER, **{"train.num_steps": 1500, "train.eval_every": 500})
  long = dict(PAPER, **{"train.num_steps": 6000, "train.eval_every": 1000})
  return {
      "short": [dict(short, **p) for p in (
          {},
          {"model.pos_init_std": 1.0},
          {"optimizer.learning_rate": 3e-3, "schedule.warmup_steps": 50},
      )],
      "probe": [dict(probe, **p) for p in (
          {"model.d_model": 128, "model.head_dim": 32},
          {"data.pca_dim": 16, "data.input_dim": 16},
          _hold_classes(3, 1500),
      )],
      "long": [dict(long, **_hold_classes(2, 6000))],
      # 2 classes per sequence for `hold_steps`, then linearly to all 10 over `steps`.
      "classes": [dict(long, **{"curriculum.classes_start": 2, "curriculum.hold_steps": 1500,
                                "curriculum.steps": 3000})],
  }


def get_sweep(arg=None):
  if arg == "tiny":
    spec, shared = sweep_common.base("tiny", layout="paper")
    return spec, [dict(shared), dict(shared, **{"curriculum.classes_start": 2,
                                                 "curriculum.steps": 2})]
  spec, _ = sweep_common.base(None, layout="paper")
  all_stages = stages()
  if arg not in all_stages:
    raise ValueError(f"sweep arg {arg!r}: use one of {sorted(all_stages)} or 'tiny'")
  return spec, all_stages[arg]

"""Model sub-configs for every GPICL learner (imported by the GPICL configs).

Sizes are "small" (CPU) or "paper" (Kirsch et al. 2022 defaults).
"""
import ml_collections

LEARNERS = ("transformer", "lstm", "outer_lstm", "mlp", "sgd", "maml")


def learner_config(name: str, size: str = "small", layout: str = "") -> ml_collections.ConfigDict:
  """`layout` "" picks each learner's default: "query" for the transformer (it leaves
  the plateau much sooner on CPU), "paper" for the recurrent learners (as measured in
  the paper); the other learners see whole (x, y) arrays and ignore it."""
  if size not in ("tiny", "small", "paper"):
    raise ValueError(f"learner size {size!r}; use tiny, small or paper")
  pick = lambda tiny, small, paper: {"tiny": tiny, "small": small, "paper": paper}[size]
  if name == "transformer":
    c = dict(num_layers=pick(1, 2, 4), num_heads=pick(2, 4, 8), head_dim=pick(8, 16, 32),
             d_model=pick(16, 64, 256), mlp_ratio=4, layout=layout or "query", pos_init_std=0.02,
             attention="xla", remat=False, dtype="float32")
  elif name == "lstm":
    c = dict(hidden_size=pick(16, 128, 256), layout=layout or "paper", forget_bias=1.0)
  elif name == "outer_lstm":
    c = dict(hidden_size=pick(8, 16, 32), num_heads=pick(1, 2, 8), layout=layout or "paper",
             forget_bias=1.0)
  elif name == "mlp":
    c = dict(hidden_size=pick(16, 128, 256))
  elif name in ("sgd", "maml"):
    c = dict(hidden_size=pick(16, 128, 128), learning_rate=1e-3)
  else:
    raise ValueError(f"learner {name!r} unknown; use one of {LEARNERS}")
  return ml_collections.ConfigDict(dict(name=name, **c))

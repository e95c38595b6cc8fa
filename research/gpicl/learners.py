"""GPICL learners by name. Every learner follows one sequence interface:
`apply(x [B, L, dx], y [B, L]) -> logits [B, L, C]`, where logits[:, t] depends only
on x[:, :t+1] and y[:, :t]; and `state_size(seq_len)` gives its accessible state."""
from __future__ import annotations

import importlib

from research.config import ConfigError

# name -> (module, class). Modules are imported on use, so one learner's
# dependencies never slow another's start-up.
LEARNERS = {
    "transformer": ("models.transformer", "Transformer"),
    "lstm": ("models.recurrent", "LSTM"),
    "outer_lstm": ("models.recurrent", "OuterProductLSTM"),
    "mlp": ("models.recurrent", "ContextFreeMLP"),
    "sgd": ("models.learned_algorithms", "SGDLearner"),
    "maml": ("models.learned_algorithms", "MAML"),
}


def make_learner(model_config, *, num_classes: int, seq_len: int, input_dim: int):
  """Instantiates `model_config.name` with the config's other fields as arguments."""
  name = model_config.name
  if name not in LEARNERS:
    raise ConfigError(f"config.model.name={name!r} is not a GPICL learner; use one of {sorted(LEARNERS)}")
  module, cls_name = LEARNERS[name]
  cls = getattr(importlib.import_module(module), cls_name)
  kwargs = {k: v for k, v in model_config.items() if k != "name"}
  if name == "transformer":
    kwargs.setdefault("max_len", seq_len)
  if name in ("sgd", "maml"):
    kwargs.setdefault("input_dim", input_dim)
  fields = set(getattr(cls, "__dataclass_fields__", {}))
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise ConfigError(f"config.model has keys {unknown} that learner {name!r} does not take; "
                     f"its fields are {sorted(fields - {'parent', 'name'})}")
  return cls(num_classes=num_classes, **kwargs)

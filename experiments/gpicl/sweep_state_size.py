r"""State size vs parameter count (paper Fig. 9): LSTMs of growing hidden size
(state h, parameters ~ h²) against outer-product LSTMs (state heads·h², parameters
about linear in h).

  python -m launch.sweep experiments/gpicl/sweep_state_size.py --run

Paper: unseen-task accuracy follows accessible state size better than parameter
count. The transformer's point comes from sweep_learners.py. Measured here: experiments/gpicl/README.md.
"""
from experiments.gpicl import sweep_common

LSTM_HIDDEN = [32, 128, 512]
OUTER = [(8, 1), (16, 2), (32, 4)]  # (hidden_size, num_heads)


def get_sweep(arg=None):
  runs = []
  spec, shared = sweep_common.base(arg, learner="lstm")
  shared.pop("model.num_layers", None)
  sizes = [8] if arg == "tiny" else LSTM_HIDDEN
  runs += [dict(shared, config=spec, **{"model.hidden_size": h}) for h in sizes]
  spec, shared = sweep_common.base(arg, learner="outer_lstm")
  shared.pop("model.num_layers", None)
  sizes = [(4, 1)] if arg == "tiny" else OUTER
  runs += [dict(shared, config=spec, **{"model.hidden_size": h, "model.num_heads": k})
           for h, k in sizes]
  return runs[0]["config"], runs

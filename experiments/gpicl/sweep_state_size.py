r"""State size vs parameter count (paper Fig. 9): LSTMs of growing hidden size
(state h, parameters ~ h²) against outer-product LSTMs (state heads·h², parameters
about linear in h).

  python -m launch.sweep experiments/gpicl/sweep_state_size.py --run
  python -m launch.sweep experiments/gpicl/sweep_state_size.py --run --arg curriculum

`--arg curriculum`: four learners chosen so that state and parameters vary apart
(LSTM h 32 / 128, outer-product LSTM 8 x 1 / 16 x 2: state 32 / 128 / 64 / 512,
parameters 12k / 159k / 1.9k / 14k), trained 3000 steps with the classes-per-sequence
curriculum of paper_layout_cpu.py compressed (2 classes for 1000 steps, then to
10 by step 2500), since without it no recurrent learner left the plateau.
`--arg curriculum_long`: LSTM 128 and outer-product LSTM 16 x 2 with the transformer's
schedule (2 classes for 1500 steps, then to 10 by step 4500), 6000 steps.

`--arg random`: the paper's Random dataset (one random 64-dim image per class, so
a task is ten (input, label) pairs to store and recall in context; projections and
permutations as for every dataset) in the query layout (input and label in one
token), where recurrent learners do learn in context on this CPU. Two pairs with
matched parameter counts and very different state: LSTM 32 (state 32, 12k params)
vs outer-product LSTM 16 x 2 (512, 14k); LSTM 128 (128, 159k) vs outer-product
LSTM 32 x 4 (4096, 170k); plus LSTM 512 (state 512 like outer 16 x 2, 170x its
parameters). 3000 steps each, seeds 0, 1, 2 trained in one vmapped step
(`train.num_seeds=3`); `random_long`: the two LSTMs (32, 128) at 10000 steps (seed 0),
to tell a longer plateau from a missing ability; `random_attention`: a 1-layer softmax
transformer (state ∝ sequence length) and a 1-layer linear-attention transformer
(a fixed d_k × d_v memory per head: models/linear_transformer.py), same budget.

Paper: unseen-task accuracy follows accessible state size better than parameter
count. The transformer's point comes from sweep_learners.py. Measured here: experiments/gpicl/README.md.
"""
from experiments.gpicl import sweep_common

LSTM_HIDDEN = [32, 128, 512]
OUTER = [(8, 1), (16, 2), (32, 4)]  # (hidden_size, num_heads)


CURRICULUM = {
    "train.num_steps": 3000, "train.eval_every": 500, "eval.datasets": ("wine",),
    "curriculum.classes_start": 2, "curriculum.hold_steps": 1000, "curriculum.steps": 1500,
}
CURRICULUM_RUNS = [("lstm", {"model.hidden_size": 32}), ("lstm", {"model.hidden_size": 128}),
                   ("outer_lstm", {"model.hidden_size": 8, "model.num_heads": 1}),
                   ("outer_lstm", {"model.hidden_size": 16, "model.num_heads": 2})]


# The transformer's schedule (paper_layout_cpu.py) for the two learners whose
# comparison matters most: more state (outer 16 x 2) vs more parameters (LSTM 128).
CURRICULUM_LONG = dict(CURRICULUM, **{"train.num_steps": 6000, "train.eval_every": 1000,
                                      "curriculum.hold_steps": 1500, "curriculum.steps": 3000})


RANDOM = {"data.dataset": "random", "train.num_steps": 3000, "train.eval_every": 1000,
          "eval.datasets": ("digits",), "train.num_seeds": 3}
RANDOM_RUNS = [("lstm", {"model.hidden_size": 32}),
               ("outer_lstm", {"model.hidden_size": 16, "model.num_heads": 2}),
               ("lstm", {"model.hidden_size": 128}),
               ("outer_lstm", {"model.hidden_size": 32, "model.num_heads": 4}),
               ("lstm", {"model.hidden_size": 512})]
# Attention on the same budget: softmax (state grows with the sequence) and linear
# (a fixed d_k × d_v memory per head and layer: models/linear_transformer.py).
ATTENTION_RUNS = [("transformer", {"model.num_layers": 1}),
                  ("linear_transformer", {"model.num_layers": 1})]


def _run(arg, learner, overrides, layout=None):
  """One run of `learner`: the CPU-scale base without the transformer's
  `model.num_layers` (attention learners set their own), plus `overrides`."""
  spec, shared = sweep_common.base(arg, learner=learner, layout=layout)
  shared.pop("model.num_layers", None)
  return dict(shared, config=spec, **overrides)


def get_sweep(arg=None):
  if arg in ("random", "random_long", "random_attention"):
    steps = {"random_long": {"train.num_steps": 10000, "train.eval_every": 2000,
                             "train.num_seeds": 1}}.get(arg, {})
    chosen = {"random": RANDOM_RUNS, "random_long": [RANDOM_RUNS[0], RANDOM_RUNS[2]],
              "random_attention": ATTENTION_RUNS}[arg]
    stage = dict(RANDOM, **steps)
    runs = [_run(None, learner, dict(stage, **sizes), layout="query")
            for learner, sizes in chosen]
    return runs[0]["config"], runs
  if arg in ("curriculum", "curriculum_long"):
    chosen = CURRICULUM_RUNS if arg == "curriculum" else CURRICULUM_RUNS[1::2]
    stage = CURRICULUM if arg == "curriculum" else CURRICULUM_LONG
    runs = [_run(None, learner, dict(sizes, **stage)) for learner, sizes in chosen]
    return runs[0]["config"], runs
  lstm = [{"model.hidden_size": h} for h in ([8] if arg == "tiny" else LSTM_HIDDEN)]
  outer = [{"model.hidden_size": h, "model.num_heads": k}
           for h, k in ([(4, 1)] if arg == "tiny" else OUTER)]
  runs = [_run(arg, "lstm", o) for o in lstm] + [_run(arg, "outer_lstm", o) for o in outer]
  if arg == "tiny":  # The attention stage's learners, tiny.
    runs += [_run(arg, learner, {}, layout="query") for learner, _ in ATTENTION_RUNS]
  return runs[0]["config"], runs

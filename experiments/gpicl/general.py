r"""The general-purpose default (`make train`): the digits transformer meta-trained on a
declared mixture of task families, evaluated on datasets and families it never saw
next to k-NN and logistic regression fitted on the same sequences.

Training mixture (research/families/, `config.families.mixture`), per batch of 128:
  96  projection  GPICL tasks on scikit-learn digits (2^16 random projections and label
                  permutations) with 2–10 classes (`tasks.classes_min`) and a random
                  3–64 of the 64 pixels (`tasks.features_min`, log-uniform) per sequence
  16  linear_regression  2-class linear classification, d = 8 (labels = argmax of W x)
  16  clusters    Gaussian class clusters (2–10 classes) in a random 2–16-dim subspace
Held out (never trained on): wine, breast_cancer, iris and mnist1d under unseen tasks,
and the decision-tree and ReLU-net classification families (2 classes, d = 8). The
final table adds, per held-out set, the model's gap to the best classical learner after
the full context (paired standard error: the same sequences). Everything else is
`digits.py` (2-layer d 64 transformer, query layout, 2000 steps of Adam 1e-3, batch 128,
32 examples per sequence).

Command:
  make train        # = python -m launch.main --config experiments/gpicl/general.py --workdir runs/gpicl_general
Variants:
  :tiny             a few steps, for tests
  :steps=4000       the longer run (README: what it changes)
  :seeds=3          three seeds in one vmapped step (the README's ± over seeds)
Measured: README.md ("The default experiment") and experiments/gpicl/README.md (g).
"""
from experiments import common
from experiments.gpicl import digits

HELD_OUT_FAMILIES = ("decision_tree", "relu_net")


def get_config(arg=None):
  a = common.parse_arg(arg, tiny=False, steps=0, seeds=1)
  c = digits.get_config("tiny" if a.tiny else None)
  with c.unlocked():
    c.data.family = "mixture"
    c.families.mixture.update(components=("projection", "linear_regression", "clusters"),
                              weights=(6.0, 1.0, 1.0))
    c.tasks.update(classes_min=2, features_min=3)
    c.families.linear_regression.num_classes = 2
    c.eval.families = HELD_OUT_FAMILIES
    for name in HELD_OUT_FAMILIES:
      c.families[name].num_classes = 2
    c.train.num_seeds = a.seeds
    if a.steps:
      c.train.num_steps = a.steps
    if a.tiny:
      c.eval.classical = ("knn1", "logistic")
  return c.lock()

r"""Garg et al. 2022 at CPU scale: function classes learnt in context, with least squares,
Lasso, ridge and nearest neighbours fitted on the same sequences.

Meta-trains the default GPICL transformer (2 layers, d 64, query layout) on fresh
functions of one class every sequence (research/families/), real-valued targets
(`data.num_classes` = 1, squared-error loss over the target's variance), with Garg's
curriculum (active input dimensions from dim/2 and loss positions from dim+1 up to
all, over the first half of training), and evaluates on fresh functions, on skewed-
covariance inputs and on inputs scaled by 2 (Garg's distribution shifts). Three seeds
train in one vmapped step.

Command (the README's numbers):
  python -m launch.main --config experiments/garg/functions.py --workdir runs/garg/linear_d5
Variants:
  :family=sparse_linear_regression   Garg's other classes (decision_tree, relu_net)
  :dim=8                             input dimension (default 5; sequence length 3·dim)
  :learner=maml                      any registered GPICL learner in place of the transformer
                                     (maml: the meta-learned-initialisation baseline)
  :tiny                              a few steps, for tests
Measured: experiments/garg/README.md.
"""
from experiments import common
from research.gpicl import defaults

# Classical learners per class (those that do not apply to real targets are skipped); sgd is
# GPICL's online-Adam learner, untrained.
CLASSICAL = ("least_squares", "ridge", "knn1", "knn_sqrt", "lasso", "sgd")


def get_config(arg=None):
  a = common.parse_arg(arg, tiny=False, learner="transformer", family="linear_regression", dim=5, steps=0, seeds=3,
                       lr=1e-3, batch=64)
  c = defaults.get_config(a.learner, "tiny" if a.tiny else "small")
  c.data.family = a.family
  c.data.num_classes = 1          # One output: the predicted value.
  c.data.input_dim = a.dim
  c.data.seq_len = 3 * a.dim      # Past the interpolation threshold t = d.
  f = c.families[a.family]
  f.dim = a.dim
  f.eval_shifts = ("skewed", "scaled")
  c.eval.datasets = ()
  c.eval.classical = CLASSICAL
  steps = a.steps or 3000
  c.curriculum.update(steps=steps // 2, dim_start=max(1, a.dim // 2), loss_len_start=a.dim + 1)
  c.optimizer.learning_rate = a.lr
  common.family_train(c, num_steps=steps, batch_size=a.batch, num_seeds=a.seeds, tiny=a.tiny,
                      tiny_steps=a.steps, tiny_classical=("least_squares", "knn1"))
  if a.tiny:
    c.curriculum.steps = 2
  return c.lock()

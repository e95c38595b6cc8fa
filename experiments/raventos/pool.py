r"""Raventós et al. 2023 at CPU scale: task diversity and the emergence of in-context
linear regression.

Linear regression, d = 8, 16 examples per sequence, noise variance 0.25 (the paper's
setting), with the weight vectors drawn from a finite pool of `num_tasks` (0: a fresh
w per sequence, infinite diversity). The final table puts next to the model the two
Bayes-optimal predictors (research/families/linear_regression.py): `bayes_pool`, the
posterior mean under the pool (the paper's dMMSE), and `bayes_ridge`, ridge with λ =
0.25 (optimal under the Gaussian prior); the "Δ" column is the mean squared difference
between a predictor's and the model's predictions over the target variance. Below the
transition the model follows dMMSE (good on pool tasks, poor on new ones), above it
ridge. Three seeds train in one vmapped step (the pool is the same for the three).

Command:
  python -m launch.main --config experiments/raventos/pool.py:num_tasks=64 --workdir runs/raventos/k6
  python -m launch.sweep experiments/raventos/sweep_pool.py --run   # the pool-size sweep
Variants: `:learner=NAME` any registered GPICL learner (e.g. maml); `:tiny` for tests.
Classical learners on the same sequences: least squares, Lasso, 1-NN, √t-NN and `sgd`
(GPICL's online-Adam learner, untrained).
Measured: experiments/raventos/README.md.
"""
from experiments import common
from research.gpicl import defaults


def get_config(arg=None):
  a = common.parse_arg(arg, tiny=False, learner="transformer", num_tasks=0, steps=0, seeds=3, dim=8, seq_len=16,
                       noise=0.5, lr=1e-3, batch=64)
  c = defaults.get_config(a.learner, "tiny" if a.tiny else "small")
  c.data.family = "linear_regression"
  c.data.num_classes = 1
  c.data.input_dim = a.dim
  c.data.seq_len = a.seq_len
  f = c.families.linear_regression
  f.update(dim=a.dim, noise_std=a.noise, num_tasks=a.num_tasks)
  c.eval.datasets = ()
  c.eval.classical = ("least_squares", "lasso", "knn1", "knn_sqrt", "sgd")
  c.optimizer.learning_rate = a.lr
  common.family_train(c, num_steps=a.steps or 2000, batch_size=a.batch, num_seeds=a.seeds,
                      tiny=a.tiny, tiny_steps=a.steps)
  return c.lock()

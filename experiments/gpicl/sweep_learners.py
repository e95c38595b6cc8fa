r"""Table 1 analogue: every learner meta-trained on digits tasks, evaluated after
the last example on unseen tasks of digits (seen data, new task), the unprojected
digits, and wine / breast_cancer / iris / mnist1d / Random (datasets never trained on).

  python -m launch.sweep experiments/gpicl/sweep_learners.py --run

Paper Table 1 (MNIST-trained, accuracy after 99 examples, %): transformer MNIST
73.7, FashionMNIST 62.2, KMNIST 53.4, Random 100, CIFAR10 19.4, SVHN 14.6;
LSTM 25.4 / 28.1 / 18.1 / 58.7 / 12.1 / 11.1; SGD 70.3 / 50.8 / 37.9 / 100 / 14.8 / 10.2;
MAML 53.7 / 48.4 / 36.3 / 99.8 / 17.4 / 11.3. Measured here: experiments/gpicl/README.md.
"""
from experiments.gpicl import sweep_common
from models.registry import LEARNERS

DATASETS = ("wine", "breast_cancer", "iris", "mnist1d", "random")


def get_sweep(arg=None):
  runs = []
  for learner in LEARNERS.names():  # Every registered learner: a new one joins the table.
    spec, shared = sweep_common.base(arg, learner=learner)
    if learner == "transformer" and arg != "tiny":
      shared["model.num_layers"] = 1
    elif "model.num_layers" in shared:
      del shared["model.num_layers"]
    if arg != "tiny":
      shared["eval.datasets"] = DATASETS
    runs.append(dict(shared, config=spec))
  return runs[0]["config"], runs

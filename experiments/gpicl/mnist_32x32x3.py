r"""GPICL at paper scale with 32×32×3 inputs (3072 dims), one input size shared by
MNIST, FashionMNIST, KMNIST (grey repeated into three channels), CIFAR10 and SVHN.

Same as mnist_paper.py otherwise (paper layout, 4-layer d 256 transformer, 512
sequences of 100, 50k steps, 2^25 tasks, meta-trained on MNIST).
  python -m research.data.prepare mnist fashion_mnist kmnist cifar10 svhn_cropped
  python -m launch.main --config experiments/gpicl/mnist_32x32x3.py --workdir runs/gpicl_mnist_32
Variants as mnist_paper.py (`:tiny`, `:num_tasks=N`, `:learner=...`, `:layout=...`).

Expected: the paper's Table 1 numbers (listed in mnist_paper.py; the brief this
was written from does not say which of the two input sizes Table 1 used, so
compare both). NOT run on this CPU machine: no measurement of this code backs
these numbers.
"""
from experiments.gpicl import mnist_paper


def get_config(arg=None):
  return mnist_paper.get_config(arg, input_dim=32 * 32 * 3)

"""Adam, AdamW and SGD: optax's implementations, hyper-parameters from the config."""
import optax

from research.optim import OPTIMIZERS


@OPTIMIZERS.register("adam", hparams={"b1": 0.9, "b2": 0.999, "eps": 1e-8})
def adam(o, lr):
  return optax.adam(lr, b1=o.b1, b2=o.b2, eps=o.eps)


@OPTIMIZERS.register("adamw", hparams={"b1": 0.9, "b2": 0.999, "eps": 1e-8})
def adamw(o, lr):
  return optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay)


@OPTIMIZERS.register("sgd", hparams={"momentum": 0.0})
def sgd(o, lr):
  return optax.sgd(lr, momentum=o.momentum or None)

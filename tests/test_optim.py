"""Optimizers and schedules from config."""
import ml_collections
import numpy as np
import pytest

from research import config as config_lib
from research import optim


def _config(opt="adam", schedule="constant", warmup=0, steps=100, lr=1e-2):
  return ml_collections.ConfigDict(dict(
      optimizer=config_lib.optimizer_section(opt, learning_rate=lr),
      schedule=dict(name=schedule, warmup_steps=warmup, final_fraction=0.1),
      train=dict(num_steps=steps)))


@pytest.mark.parametrize("name,at0,at_end", [
    ("constant", 1e-2, 1e-2), ("cosine", 1e-2, 1e-3), ("linear", 1e-2, 1e-3),
    ("warmup_cosine", 0.0, 1e-3)])
def test_schedules(name, at0, at_end):
  s = optim.make_schedule(_config(schedule=name, warmup=10 if name == "warmup_cosine" else 0))
  np.testing.assert_allclose(float(s(0)), at0, atol=1e-9)
  np.testing.assert_allclose(float(s(100)), at_end, rtol=1e-4)


def test_constant_with_warmup_ramps():
  s = optim.make_schedule(_config(warmup=10))
  assert float(s(0)) == 0.0 and np.isclose(float(s(5)), 5e-3) and np.isclose(float(s(50)), 1e-2)


@pytest.mark.parametrize("name", optim.OPTIMIZERS.names())
def test_optimizers_build_and_step(name):
  import jax.numpy as jnp
  tx = optim.make_optimizer(_config(opt=name))
  params = {"w": jnp.ones(3)}
  updates, _ = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
  assert float(updates["w"][0]) < 0


def test_every_optimizer_declares_its_hyperparameters_in_the_section():
  """A registered optimizer's keys join every config's optimizer section (one list)."""
  section = config_lib.optimizer_section()
  for entry in optim.OPTIMIZERS.entries():
    assert set(entry.hparams) <= set(section), entry.name
  assert set(optim.SHARED_KEYS) <= set(section)

"""Sharding strategies are config: DP, FSDP, TP and FSDP+TP on 8 fake devices give
the losses of one device; memory per device shrinks; rule errors are caught early."""
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from experiments.gpicl import digits
from research import sharding
from research import train

STRATEGIES = {
    "dp": (("data", 8), ("model", 1)),
    "fsdp": (("data", 8), ("model", 1)),
    "tp": (("data", 4), ("model", 2)),
    "fsdp_tp": (("data", 4), ("model", 2)),
}


def _config(learner, rules, mesh):
  c = digits.get_config(f"tiny,learner={learner}")
  c.unlock()
  c.sharding.rules = rules
  c.mesh = mesh
  c.train.batch_size = 16
  if learner == "transformer":
    c.model.update(d_model=32, num_heads=2, head_dim=8)  # Dims divisible by 8 for FSDP.
  c.lock()
  return c


def _losses(config, devices, steps=3):
  mesh = sharding.make_mesh(config.mesh, devices=devices)
  _, state, step = train.fresh_state_and_step(config, mesh)
  out = []
  for _ in range(steps):
    state, m = step(state)
    out.append(float(sharding.to_host(m["loss"])))
  return out, state


@pytest.mark.parametrize("learner", ["transformer", "lstm"])
def test_every_strategy_matches_one_device(learner):
  ref, _ = _losses(_config(learner, "dp", (("data", 1), ("model", 1))), jax.devices()[:1])
  for rules, mesh in STRATEGIES.items():
    got, state = _losses(_config(learner, rules, mesh), jax.devices())
    np.testing.assert_allclose(got, ref, rtol=1e-5, err_msg=f"{learner} {rules}")


def test_fsdp_and_tp_shrink_parameter_memory_per_device():
  per_device = {}
  for rules, mesh in STRATEGIES.items():
    _, state = _losses(_config("transformer", rules, mesh), jax.devices(), steps=0)
    per_device[rules] = sharding.bytes_per_device({"p": state["params"], "o": state["opt_state"]})
  assert per_device["fsdp"] < 0.5 * per_device["dp"]
  assert per_device["tp"] < per_device["dp"]
  assert per_device["fsdp_tp"] < per_device["tp"]


def test_rule_errors_are_clear_before_compiling():
  mesh = sharding.make_mesh((("data", 4), ("model", 2)))
  rules = sharding.rules_from_config("tp")
  with pytest.raises(sharding.ShardingError, match="has no sharding rule"):
    sharding.logical_to_mesh_spec(P("embed", "experts"), (8, 8), rules, mesh, "w")
  with pytest.raises(sharding.ShardingError, match="does not divide"):
    sharding.logical_to_mesh_spec(P("embed", "mlp"), (8, 7), rules, mesh, "w")
  # A model whose head count the model axis cannot split fails in the trainer too.
  c = _config("transformer", "tp", (("data", 4), ("model", 2)))
  c.unlock()
  c.model.num_heads = 3
  c.lock()
  with pytest.raises(sharding.ShardingError, match="heads"):
    train.fresh_state_and_step(c, sharding.make_mesh(c.mesh))


def test_rules_map_logical_axes():
  mesh = sharding.make_mesh((("data", 4), ("model", 2)))
  spec = sharding.logical_to_mesh_spec(P("embed", "mlp"), (8, 8),
                                       sharding.rules_from_config("fsdp_tp"), mesh, "w")
  assert spec == P("data", "model")
  spec = sharding.logical_to_mesh_spec(P("embed", "mlp"), (8, 8),
                                       sharding.rules_from_config("dp"), mesh, "w")
  assert spec == P(None, None)

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
  _, state, step, inputs = train.fresh_state_and_step(config, mesh)
  out = []
  for i in range(steps):
    state, m = step(state, *inputs(i))
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


@pytest.mark.parametrize("rules", ["dp", "fsdp", "tp", "fsdp_tp"])
def test_kv_bottleneck_sharded_matches_single_device(rules):
  """DKVB: values sharded by heads (TP) / replicated (DP); same logits and gradients."""
  import flax.linen as nn
  import jax.numpy as jnp
  from jax.sharding import NamedSharding
  from models import kv_bottleneck as kvb

  model = kvb.KeyValueBottleneck(dim_in=16, num_heads=8, num_keys=32, dim_key=4, dim_value=5,
                                 value_init="normal", value_init_scale=0.1, key_chunk=16)
  x = jax.random.normal(jax.random.key(0), (16, 16))
  y = jnp.arange(16) % 5
  variables = kvb.init_bottleneck(model, jax.random.key(1))
  boxed = jax.eval_shape(lambda: model.init({"params": jax.random.key(1), "keys": jax.random.key(2)},
                                            jnp.zeros((1, 16))))
  mesh = sharding.make_mesh((("data", 4), ("model", 2)))
  rule_set = sharding.rules_from_config(rules)
  params_sh = sharding.tree_shardings(boxed["params"], rule_set, mesh)
  params = jax.device_put(variables["params"], params_sh)
  keys = jax.device_put(variables["keys"], sharding.replicated(mesh))
  xb = jax.device_put(x, NamedSharding(mesh, P("data")))

  def loss(p, k, x):
    logits, _ = model.apply({"params": p, "keys": k}, x)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

  want_l, want_g = jax.jit(jax.value_and_grad(loss))(variables["params"], variables["keys"], x)
  got_l, got_g = jax.jit(jax.value_and_grad(loss))(params, keys, xb)
  np.testing.assert_allclose(got_l, want_l, rtol=1e-6)
  np.testing.assert_allclose(got_g["values"], want_g["values"], rtol=1e-5, atol=1e-7)
  if rules.startswith("tp") or rules == "fsdp_tp":
    assert "model" in str(params["values"].sharding.spec)

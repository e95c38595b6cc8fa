"""The LMs' logical axis names work with the framework's sharding rules (8 fake CPUs)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.llm import CausalLM, LMConfig
from research import sharding


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_tensor_parallel_forward_matches_single_device(arch):
  cfg = LMConfig(arch=arch, vocab_size=64, d_model=32, num_layers=2, num_heads=4,
                 num_kv_heads=4 if arch == "gpt2" else 2, head_dim=8, mlp_dim=64, max_len=32)
  model = CausalLM(cfg)
  ids = jax.random.randint(jax.random.key(0), (4, 8), 0, 64)
  boxed = jax.eval_shape(model.init, jax.random.key(1), ids)
  mesh = sharding.make_mesh([("data", 4), ("model", 2)])
  rules = sharding.RULE_SETS["fsdp_tp"] + (("layers", None), ("length", None))
  shardings = sharding.tree_shardings(boxed, rules, mesh)
  params = nn.unbox(model.init(jax.random.key(1), ids))
  sharded = jax.device_put(params, shardings)
  wq = sharded["params"]["layers"]["attn"]["wq"]
  assert tuple(wq.sharding.spec) == (None, "data", "model", None)  # layers embed heads kv
  want = jax.jit(model.apply)(params, ids)
  got = jax.jit(model.apply)(sharded, ids)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_cost_analysis_config_counts_every_layer():
  """A scanned body is counted once by XLA; for_cost_analysis() unrolls it."""
  flops = {}
  for layers in (1, 3):
    cfg = LMConfig(arch="llama", vocab_size=64, d_model=32, num_layers=layers, num_heads=4,
                   num_kv_heads=2, head_dim=8, mlp_dim=64).for_cost_analysis()
    ids = jnp.zeros((1, 16), jnp.int32)
    params = nn.unbox(jax.eval_shape(CausalLM(cfg).init, jax.random.key(0), ids))
    fn = jax.jit(lambda p, x, c=cfg: CausalLM(c).apply(p, x))
    cost = fn.lower(params, ids).compile().cost_analysis()
    flops[layers] = float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])
  per_layer = (flops[3] - flops[1]) / 2
  assert per_layer > 0.3 * flops[1], flops  # 2 more layers really add their FLOPs

"""Where the paper-size GPICL transformer's train step spends its time on this
backend: forward + backward of each kind of work at the paper's shapes (sequences of
100 tokens, width 256, 8 heads × 32, MLP 1024, 4 layers), next to the whole model.

The parts are written out directly (not the model) so that each runs alone:
  dense        the 6 weight matmuls of every layer (qkv, out, MLP in/out)
  attention    scores, causal mask, softmax, weighted sum (the einsum form)
  elementwise  LayerNorm ×2 and GELU of every layer
Each reports seconds and its share of the measured f32 matmul peak, so the run says
which part holds the step's MFU down. `launch.bench` runs it as `gpicl_step_breakdown`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from research import flops as flops_lib

L, D, H, HD, F, LAYERS = 100, 256, 8, 32, 1024, 4


def _median_time(fn, *args):
  return flops_lib.time_fn(jax.jit(fn), *args, repeats=5)


def _dense_loss(w, x):
  h = x
  for _ in range(LAYERS):
    h = h + (h @ w["qkv"])[:, :D] @ w["out"]
    h = h + (h @ w["mlp_in"]) @ w["mlp_out"]
  return jnp.sum(h**2)


def _attention_loss(q):
  mask = jnp.tril(jnp.ones((L, L), bool))
  h = q
  for _ in range(LAYERS):
    s = jnp.einsum("bqhd,bkhd->bhqk", h * HD**-0.5, h)
    p = jax.nn.softmax(jnp.where(mask, s, -1e9), -1)
    h = jnp.einsum("bhqk,bkhd->bqhd", p, h)
  return jnp.sum(h**2)


def _elementwise_loss(x, wide):
  def norm(h):
    m = h.mean(-1, keepdims=True)
    return (h - m) * jax.lax.rsqrt(((h - m)**2).mean(-1, keepdims=True) + 1e-6)
  h = x
  for _ in range(LAYERS):
    h = norm(norm(h))
    wide = jax.nn.gelu(wide)
  return jnp.sum(h**2) + jnp.sum(wide**2)


def bench_step_breakdown(batch: int = 64) -> dict:
  """Seconds and fraction of the f32 matmul peak for each part (fwd + bwd)."""
  from models import transformer  # pylint: disable=import-outside-toplevel
  peak = flops_lib.matmul_peak(n=1536, repeats=3)
  k = jax.random.split(jax.random.key(0), 6)
  tokens = batch * L
  w = {"qkv": jax.random.normal(k[0], (D, 3 * D)) * D**-0.5,
       "out": jax.random.normal(k[1], (D, D)) * D**-0.5,
       "mlp_in": jax.random.normal(k[2], (D, F)) * D**-0.5,
       "mlp_out": jax.random.normal(k[3], (F, D)) * F**-0.5}
  x = jax.random.normal(k[4], (tokens, D))
  q = jax.random.normal(k[5], (batch, L, H, HD))
  wide = jax.random.normal(k[5], (tokens, F))
  parts = {
      "dense": (_median_time(jax.grad(_dense_loss), w, x),
                3 * 2 * tokens * LAYERS * (D * 3 * D + D * D + 2 * D * F)),
      "attention": (_median_time(jax.grad(_attention_loss), q),
                    3 * 2 * 2 * batch * H * L * L * HD * LAYERS),
      "elementwise": (_median_time(jax.grad(_elementwise_loss), x, wide), 0),
  }
  # The whole model (paper layout, 196-dim inputs), forward + backward.
  model = transformer.Transformer(num_classes=10, d_model=D, num_layers=LAYERS, num_heads=H,
                                  head_dim=HD, mlp_ratio=F // D, max_len=L, layout="paper")
  xs = jax.random.normal(k[4], (batch, L, 196))
  ys = jax.random.randint(k[5], (batch, L), 0, 10)
  params = model.init(jax.random.key(1), xs[:1], ys[:1])
  loss = lambda p: jnp.mean(model.apply(p, xs, ys)**2)
  grad = jax.jit(jax.grad(loss))
  model_flops = flops_lib.compiled_flops(grad.lower(params).compile())
  model_s = _median_time(jax.grad(loss), params)
  out = {"batch": batch, "matmul_peak_flops": peak,
         "model": {"seconds": model_s, "flops": model_flops,
                   "fraction_of_peak": model_flops / model_s / peak}}
  total = sum(s for s, _ in parts.values())
  for name, (s, f) in parts.items():
    out[name] = {"seconds": s, "share_of_parts_time": s / total,
                 "fraction_of_peak": f / s / peak if f else None}
  return out

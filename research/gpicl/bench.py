"""Where the paper-size GPICL transformer's train step spends its time on this
backend: forward + backward of each kind of work at the paper's shapes (sequences of
100 tokens, width 256, 8 heads × 32, MLP 1024, 4 layers), next to the whole model.

The parts are written out directly (not the model) so that each runs alone:
  dense        the 6 weight matmuls of every layer (qkv, out, MLP in/out)
  attention    scores, causal mask, softmax, weighted sum: the model's own
               `dot_product_attention`, for each implementation ("xla" einsum form,
               "jax" = jax.nn.dot_product_attention, "cpu_fused" kernel); the part
               called `attention` is the one the model uses by default ("auto")
  elementwise  LayerNorm ×2 and GELU of every layer
  kernel_gradients  x^T·g of each dense shape (D×D, D×F, F×D) alone, as the model's
               layers compute it (`models.layers.token_dot_general`) and as
               `lax.dot_general`'s own transpose rule does (`plain`)
Each part is timed alternately with the f32 2048³ matmul (`flops.time_against_peak`),
so its fraction of the peak holds on a loaded machine. Attention FLOPs are counted
as the einsum form computes them (all T² scores), whatever an implementation skips.
`launch.bench` runs it as `gpicl_step_breakdown`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from research import flops as flops_lib

L, D, H, HD, F, LAYERS = 100, 256, 8, 32, 1024, 4


def _dense_loss(w, x):
  h = x
  for _ in range(LAYERS):
    h = h + (h @ w["qkv"])[:, :D] @ w["out"]
    h = h + (h @ w["mlp_in"]) @ w["mlp_out"]
  return jnp.sum(h**2)


def _attention_loss(implementation):
  from models import transformer  # pylint: disable=import-outside-toplevel
  mask = jnp.tril(jnp.ones((L, L), bool))[None, None]

  def loss(q):
    h = q
    for _ in range(LAYERS):
      h = transformer.dot_product_attention(h, h, h, mask, implementation)
    return jnp.sum(h**2)
  return loss


def _elementwise_loss(x, wide):
  def norm(h):
    m = h.mean(-1, keepdims=True)
    return (h - m) * jax.lax.rsqrt(((h - m)**2).mean(-1, keepdims=True) + 1e-6)
  h = x
  for _ in range(LAYERS):
    h = norm(norm(h))
    wide = jax.nn.gelu(wide)
  return jnp.sum(h**2) + jnp.sum(wide**2)


def _kernel_grad_loss(dot_general):
  """w -> <x·w, g>: its gradient is the kernel gradient x^T·g alone (the forward
  matmul is dead code, since the cotangent of x·w is g)."""
  dims = (((1,), (0,)), ((), ()))
  return lambda w, x, g: jnp.vdot(dot_general(x, w, dims), g)


def attention_implementations() -> list[str]:
  from models import cpu_attention  # pylint: disable=import-outside-toplevel
  return ["xla", "jax"] + (["cpu_fused"] if jax.default_backend() == "cpu"
                           and cpu_attention.available() else [])


def bench_step_breakdown(batch: int = 64, rounds: int = 3) -> dict:
  """Seconds and fraction of the f32 matmul peak for each part (fwd + bwd)."""
  from models import transformer  # pylint: disable=import-outside-toplevel
  k = jax.random.split(jax.random.key(0), 6)
  tokens = batch * L
  w = {"qkv": jax.random.normal(k[0], (D, 3 * D)) * D**-0.5,
       "out": jax.random.normal(k[1], (D, D)) * D**-0.5,
       "mlp_in": jax.random.normal(k[2], (D, F)) * D**-0.5,
       "mlp_out": jax.random.normal(k[3], (F, D)) * F**-0.5}
  x = jax.random.normal(k[4], (tokens, D))
  q = jax.random.normal(k[5], (batch, L, H, HD))
  wide = jax.random.normal(k[5], (tokens, F))
  timed = lambda fn, *args, flops=0: flops_lib.time_against_peak(
      jax.jit(jax.grad(fn)), *args, flops=flops, rounds=rounds, repeats=3)
  attention_flops = 3 * 2 * 2 * batch * H * L * L * HD * LAYERS
  by_impl = {impl: timed(_attention_loss(impl), q, flops=attention_flops)
             for impl in attention_implementations()}
  default = "cpu_fused" if "cpu_fused" in by_impl else "xla"  # What "auto" runs here.
  parts = {
      "dense": timed(_dense_loss, w, x,
                     flops=3 * 2 * tokens * LAYERS * (D * 3 * D + D * D + 2 * D * F)),
      "attention": dict(by_impl[default], implementation=default),
      "elementwise": timed(_elementwise_loss, x, wide),
  }
  # The whole model (paper layout, 196-dim inputs), forward + backward, with the
  # default attention; FLOPs counted with the einsum form (XLA cannot see into the kernel).
  xs = jax.random.normal(k[4], (batch, L, 196))
  ys = jax.random.randint(k[5], (batch, L), 0, 10)

  def model_loss(implementation):
    model = transformer.Transformer(num_classes=10, d_model=D, num_layers=LAYERS, num_heads=H,
                                    head_dim=HD, mlp_ratio=F // D, max_len=L, layout="paper",
                                    attention=implementation)
    return model, lambda p: jnp.mean(model.apply(p, xs, ys)**2)

  model, loss = model_loss("xla")
  params = model.init(jax.random.key(1), xs[:1], ys[:1])
  model_flops = flops_lib.compiled_flops(jax.jit(jax.grad(loss)).lower(params).compile())
  out = {"batch": batch, "matmul_peak_n": flops_lib.PEAK_N,
         "matmul_peak_flops": parts["dense"]["peak_flops"],
         "model": dict(timed(model_loss("auto")[1], params, flops=model_flops), flops=model_flops,
                       attention=default),
         "model_einsum_attention": dict(timed(loss, params, flops=model_flops), flops=model_flops),
         "attention_by_implementation": by_impl}
  from models import layers  # pylint: disable=import-outside-toplevel
  out["kernel_gradients"] = {}
  for k_in, n_out in ((D, D), (D, F), (F, D)):
    inputs = jax.random.normal(k[4], (tokens, k_in))
    cotangent = jax.random.normal(k[5], (tokens, n_out))
    out["kernel_gradients"][f"{k_in}x{n_out}"] = {
        name: timed(_kernel_grad_loss(fn), jnp.zeros((k_in, n_out)), inputs, cotangent,
                    flops=2 * tokens * k_in * n_out)
        for name, fn in (("model", layers.token_dot_general), ("plain", jax.lax.dot_general))}
  total = sum(p["seconds"] for p in parts.values())
  for name, p in parts.items():
    out[name] = dict(p, share_of_parts_time=p["seconds"] / total)
  return out

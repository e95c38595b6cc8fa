"""Where a MEND stage-2 step spends its time, before and after the episode table, the
shape buckets and the teacher cache — measured in one process, interleaved, so the
ratios survive a shared machine (absolute seconds do not).

  python -m research.mend.bench --out bench/mend_stage2_breakdown.json [--steps 8]

Configurations (SmolLM2-135M frozen, distiller = its first 4 blocks, l = 16, batch 4,
K = 16, `data.max_length=384 data.max_row_tokens=48`, the class_to_class meta-train
tasks of the offline suite: the README's stage-2 runs):
  before   fresh demonstrations every step, teacher pass in the step, full slots
           (Td = 336 demonstration + Tq = 48 query tokens for every row)
  after    a table of `--episodes` episodes, 4 shape buckets, teacher from the top-64
           cache (filled first if needed; its cost per episode is reported)
  after_full  (`--full`) the same with the full-vocabulary cache: the exact loss of
           "before" on the same batch (tests/mend/test_mend_cache.py), whole steps only
Parts of a step (forward + backward where the step differentiates), at the "before"
shapes and at every bucket's shape (weighted by the bucket's share of the draws):
  teacher_fwd          LLM(demonstrations ⊕ query), vocabulary projection at the query
  teacher_fwd_legacy   the same with the projection at every slot (the code before)
  distiller_fwd_bwd    S_D and the gradient of the distiller's parameters
  student_fwd_bwd      LLM([S_D ; x]) hidden states and the gradient back to S_D
  vocab_kl_fwd_bwd     projection, softmaxes, KL (live teacher: full vocabulary; after:
                       top-64 + tail) and CE, and their gradient
  step                 the trainer's jitted step (includes the AdamW update)
Also the KL's truncation error of the top-k cache on real batches (k = 16, 64, 256):
the coarsened KL against the full one, and the cosine between their gradients with
respect to the student's logits. `launch.bench` can list `bench_stage2_breakdown`.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from research import config as config_lib
from research import flops as flops_lib
from research import sharding
from research import train
from research import workdir as workdir_lib
from research.mend import episodes as episodes_lib
from research.mend import losses
from models import llm

TOP_K = (16, 64, 256)


def _config(after: bool, episodes: int, suite_dir: str, tiny: bool = False,
            cache: str = "topk"):
  finetune = config_lib.load_module(config_lib.experiments_file("mend", "finetune.py"))
  # "before" is the README's stage-2 runs: fresh demonstrations, teacher in the step.
  c = finetune.get_config(f"steps=300,episodes={episodes},fast={after}" + (",tiny" * tiny))
  with c.unlocked():
    c.data.suite_dir = suite_dir
    if after:
      c.teacher.cache = cache
    if not tiny:
      c.data.update(max_length=384, max_row_tokens=48)
  return c.lock()


def _time(fn, *args, repeats=3):
  return flops_lib.time_fn(jax.jit(fn), *args, repeats=repeats)


def part_times(exp, params, batch, shape=None, cached=None) -> dict[str, float]:
  """Seconds of each part on `batch` (cut to `shape`)."""
  if shape is not None:
    batch = episodes_lib.at_shape(batch, *shape)
  dist, model = exp.objects["distiller"], exp.objects["lm"].model
  lp = exp.frozen["lm"]
  b = {k: batch[k] for k in ("demo_ids", "demo_mask", "query_ids", "query_mask",
                             "target_mask")}

  def teacher(lp, b):
    return losses.teacher_logits(model, lp, b["demo_ids"], b["demo_mask"], b["query_ids"],
                                 b["query_mask"])

  def teacher_legacy(lp, b):
    ids = jnp.concatenate([b["demo_ids"], b["query_ids"]], 1)
    mask = jnp.concatenate([b["demo_mask"], b["query_mask"]], 1)
    return model.apply(lp, ids, attention_mask=mask)[:, b["demo_ids"].shape[1]:]

  def distill(p, b):
    return jnp.sum(dist.apply({"params": p}, b["demo_ids"], b["demo_mask"]) ** 2)

  s_d = jax.jit(lambda p, b: dist.apply({"params": p}, b["demo_ids"], b["demo_mask"]))(
      params, b)
  l = s_d.shape[1]

  def student_hidden(s_d, lp, b):
    tok = model.apply(lp, b["query_ids"], method=llm.CausalLM.embed)
    mask = jnp.concatenate([jnp.ones((s_d.shape[0], l), jnp.int32), b["query_mask"]], 1)
    return model.apply(lp, inputs_embeds=jnp.concatenate([s_d, tok], 1), attention_mask=mask,
                       method=llm.CausalLM.hidden)[:, l:]

  h = jax.jit(student_hidden)(s_d, lp, b)
  t_logits = jax.jit(teacher)(lp, b)

  def vocab_kl(h, lp, b, t_logits, cached):
    st = model.apply(lp, h, method=llm.CausalLM.head)
    kl = (losses.kl_topk(cached, st) if cached is not None
          else losses.kl_per_token(t_logits, st))
    nll, w = losses.ce_per_token(st, b["query_ids"], b["target_mask"])
    return losses.masked_mean(kl, b["query_mask"].astype(jnp.float32)) + losses.masked_mean(
        nll, w)

  return {
      "teacher_fwd": _time(teacher, lp, b),
      "teacher_fwd_legacy": _time(teacher_legacy, lp, b),
      "distiller_fwd_bwd": _time(jax.grad(distill), params, b),
      "student_fwd_bwd": _time(jax.grad(lambda s, lp, b: jnp.sum(student_hidden(s, lp, b)**2)),
                               s_d, lp, b),
      "vocab_kl_fwd_bwd": _time(jax.grad(vocab_kl), h, lp, b, t_logits, cached),
  }


def truncation_error(exp, params, batches) -> dict:
  """The top-k KL against the full-vocabulary KL on real batches (live teacher)."""
  dist, model = exp.objects["distiller"], exp.objects["lm"].model
  lp = exp.frozen["lm"]

  @jax.jit
  def logits(p, b):
    s_d = dist.apply({"params": p}, b["demo_ids"], b["demo_mask"])
    st = losses.student_logits(model, lp, s_d, b["query_ids"], b["query_mask"])
    te = losses.teacher_logits(model, lp, b["demo_ids"], b["demo_mask"], b["query_ids"],
                               b["query_mask"])
    return st, te

  out = {k: {"kl_topk": [], "kl_full": [], "grad_cos": []} for k in TOP_K}
  for b in batches:
    st, te = logits(params, b)
    w = b["query_mask"].astype(jnp.float32)
    full_fn = lambda s: losses.masked_mean(losses.kl_per_token(te, s), w)
    g_full = jax.grad(full_fn)(st)
    for k in TOP_K:
      cached = losses.teacher_topk(te, k)
      top_fn = lambda s, c=cached: losses.masked_mean(losses.kl_topk(c, s), w)
      g_top = jax.grad(top_fn)(st)
      cos = jnp.sum(g_full * g_top) / (jnp.linalg.norm(g_full) * jnp.linalg.norm(g_top))
      out[k]["kl_topk"].append(float(top_fn(st)))
      out[k]["kl_full"].append(float(full_fn(st)))
      out[k]["grad_cos"].append(float(cos))
  summary = {}
  for k, v in out.items():
    full, top = np.asarray(v["kl_full"]), np.asarray(v["kl_topk"])
    summary[f"top{k}"] = {"kl_full": float(full.mean()), "kl_topk": float(top.mean()),
                          "relative_error": float(np.mean((full - top) / full)),
                          "max_relative_error": float(np.max((full - top) / full)),
                          "grad_cosine": float(np.mean(v["grad_cos"])),
                          "batches": len(full)}
  return summary


def bench_stage2_breakdown(steps: int = 8, episodes: int = 256, suite_dir: str = "runs/mend",
                           rounds: int = 2, tiny: bool = False, full: bool = False) -> dict:
  """Parts and whole steps of stage 2, before and after; see the module docstring.
  `tiny`: the tiny random LLM of the `:tiny` configs (tests). `full`: also whole steps
  with the full-vocabulary cache ("after_full": the exact loss, no truncation)."""
  load0 = os.getloadavg()
  mesh = sharding.make_mesh(_config(False, episodes, suite_dir, tiny).mesh)
  out: dict = {"steps_per_round": steps, "rounds": rounds, "episodes": episodes}
  built = {}
  variants = (("before", False, ""), ("after", True, "topk")) + (
      (("after_full", True, "full"),) if full else ())
  for name, after, cache in variants:
    t0 = time.perf_counter()
    exp, state, step, inputs = train.fresh_state_and_step(
        _config(after, episodes, suite_dir, tiny, cache or "topk"), mesh)
    built[name] = [exp, state, step, inputs, 0]
    out[name] = {"build_and_compile_s": time.perf_counter() - t0, "step_s": [],
                 **{k: v for k, v in exp.info.items() if k.startswith(("teacher_cache",
                                                                       "bucket"))}}
  # Whole steps, interleaved: before, after, before, after, ...
  for _ in range(rounds):
    for name in built:
      exp, state, step, inputs, i = built[name]
      state, m = step(state, *inputs(i))  # Warm (and the first bucket's branch).
      jax.block_until_ready(m)
      for j in range(steps):
        t = time.perf_counter()
        state, m = step(state, *inputs(i + 1 + j))
        jax.block_until_ready(m)
        out[name]["step_s"].append(time.perf_counter() - t)
      built[name][1], built[name][4] = state, i + 1 + steps
  for name in built:
    s = np.asarray(out[name]["step_s"])
    out[name]["mean_step_s"] = float(s.mean())
    out[name]["steps_per_hour"] = 3600.0 / float(s.mean())
  out["speedup_steps_per_hour"] = out["after"]["steps_per_hour"] / out["before"]["steps_per_hour"]
  if full:
    out["speedup_steps_per_hour_full_cache"] = (out["after_full"]["steps_per_hour"]
                                                / out["before"]["steps_per_hour"])
  # Parts: before at the full shapes; after at every bucket, weighted by its draws.
  exp_b, state_b = built["before"][0], built["before"][1]
  params = state_b["params"]
  batch = jax.jit(exp_b.sample_batch)(exp_b.frozen, jax.random.key(0), 0)
  out["before"]["parts_s"] = part_times(exp_b, params, batch)
  exp_a = built["after"][0]
  sizes = np.asarray(exp_a.info["bucket_sizes"], np.float64)
  weights = sizes / sizes.sum()
  per_bucket = []
  sample = jax.jit(exp_a.sample_batch)
  for bi, shape in enumerate(exp_a.objects["buckets"]):
    for seed in range(1000):  # A batch of this bucket.
      b = sample(exp_a.frozen, jax.random.key(seed), 0)
      if int(b["bucket"][0]) == bi:
        break
    cached = {"ids": b["teacher_ids"][:, :shape[1]], "logp": b["teacher_logp"][:, :shape[1]],
              "tail": b["teacher_tail"][:, :shape[1]]}
    per_bucket.append({"shape": list(shape), "weight": float(weights[bi]),
                       "parts_s": part_times(exp_a, params, b, shape, cached)})
  out["after"]["buckets"] = per_bucket
  out["after"]["parts_s"] = {k: float(sum(pb["weight"] * pb["parts_s"][k] for pb in per_bucket))
                             for k in per_bucket[0]["parts_s"]}
  # The KL's truncation error with the top-k cache (real batches, live teacher).
  batches = [jax.jit(exp_b.sample_batch)(exp_b.frozen, jax.random.key(100 + i), 0)
             for i in range(4)]
  out["truncation"] = truncation_error(exp_b, params, batches)
  out["load_average"] = {"start": load0, "end": os.getloadavg()}
  out["machine"] = {"cpus": os.cpu_count(), "devices": [str(d) for d in jax.devices()]}
  return out


def markdown(r: dict) -> str:
  b, a = r["before"], r["after"]
  lines = ["| part (s) | before (full slots) | after (buckets, weighted) |", "|---|---|---|"]
  for k in b["parts_s"]:
    after = a["parts_s"][k]
    note = " (not run: cached)" if k.startswith("teacher") else ""
    lines.append(f"| {k} | {b['parts_s'][k]:.3f} | {after:.3f}{note} |")
  lines.append(f"| **whole step** (mean of {len(b['step_s'])}) | **{b['mean_step_s']:.2f}** | "
               f"**{a['mean_step_s']:.2f}** |")
  lines.append(f"| steps / hour | {b['steps_per_hour']:.0f} | {a['steps_per_hour']:.0f} "
               f"(× {r['speedup_steps_per_hour']:.2f}) |")
  if "after_full" in r:
    f = r["after_full"]
    lines.append(f"| full-vocabulary cache (exact loss): whole step / steps per hour | | "
                 f"{f['mean_step_s']:.2f} / {f['steps_per_hour']:.0f} "
                 f"(× {r['speedup_steps_per_hour_full_cache']:.2f}) |")
  lines += ["", "| top-k | KL full | KL top-k | relative error (mean / max) | grad cosine |",
            "|---|---|---|---|---|"]
  for k, v in r["truncation"].items():
    lines.append(f"| {k} | {v['kl_full']:.4f} | {v['kl_topk']:.4f} | "
                 f"{v['relative_error']:.2e} / {v['max_relative_error']:.2e} | "
                 f"{v['grad_cosine']:.6f} |")
  return "\n".join(lines)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--out", default="bench/mend_stage2_breakdown.json")
  ap.add_argument("--steps", type=int, default=8)
  ap.add_argument("--rounds", type=int, default=2)
  ap.add_argument("--episodes", type=int, default=256)
  ap.add_argument("--suite_dir", default="runs/mend")
  ap.add_argument("--full", action="store_true",
                  help="also whole steps with the full-vocabulary teacher cache (exact loss)")
  args = ap.parse_args(argv)
  r = bench_stage2_breakdown(args.steps, args.episodes, args.suite_dir, args.rounds,
                             full=args.full)
  md = markdown(r)
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  workdir_lib.write_atomic(args.out, json.dumps(r, indent=1))
  workdir_lib.write_atomic(os.path.splitext(args.out)[0] + ".md", md + "\n")
  print(md)


if __name__ == "__main__":
  main()

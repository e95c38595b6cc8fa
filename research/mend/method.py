"""MEND's evaluation method: a trained distiller run (`mend_finetune`) as
`LABEL=RUN_DIR` in `config.methods` (registered under the task that trains it).

Per (task, seed), S_D comes from the seed's K demonstrations, packed exactly as in
training (`research/mend/data.py`: " x y" per demonstration, left-truncated by whole
demonstrations to the run's slot), is prefilled into the KV cache as `prefix_embeds`,
and every (query, option) row is scored against it with the shared direct scoring.
The run's newest checkpoint is used (no selection on meta-test tasks), or the one named
as `LABEL=RUN_DIR@STEP` (learning curves).

Efficiency (XLA cost analysis of the executables that ran; wall time of those calls):
S_D reused per (task, seed) — distiller + l-vector prefill amortised over the task's
queries, plus the rows — and S_D computed per query. Compression = demonstration
tokens / l.
"""
from __future__ import annotations

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from research import flops as flops_lib
from research import runs
from research.errors import ConfigError
from research.llm import defaults as llm_defaults
from research.llm.metaicl import prompts
from research.llm.metaicl.methods import METHODS, Method
from research.mend import data as mend_data

SLOT_BUCKET = 32  # Distiller slot lengths at evaluation: multiples of this.


@METHODS.register("mend_finetune", needs=("demonstrations",), seed_dependent=True,
                  run="required")
class Distilled(Method):
  """A trained distiller: demonstrations -> S_D, metered, then direct scoring."""

  def __init__(self, ctx, run):
    super().__init__(ctx, run)
    path, _, step = run.partition("@")  # RUN_DIR@STEP: that checkpoint (default: newest).
    trained = runs.load(path, step=int(step) if step else None)
    self.step = trained.step
    if trained.config.model.to_dict() != llm_defaults.section_of(ctx.lm).to_dict():
      raise ConfigError(f"{run} was trained against model {trained.config.model.to_dict()}, "
                        f"this evaluation uses {llm_defaults.section_of(ctx.lm).to_dict()}")
    self.trained_on = trained.config.data.partition
    self.module = trained.experiment.objects["distiller"]
    # On the default device, as the scorer (the run restored them onto its mesh).
    self.params = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), nn.unbox(trained.params))
    self.max_row_tokens = trained.config.data.max_row_tokens
    self.td = trained.experiment.objects["demo_slots"]
    self.num_vectors = trained.config.distiller.num_vectors
    self._fn = jax.jit(lambda p, ids, m: self.module.apply({"params": p}, ids, m)[0])
    self._cost_module = self.module.clone(lm_config=self.module.lm_config.for_cost_analysis())
    self._flops: dict[int, float] = {}  # slot length -> XLA FLOPs of one call
    self.distiller = {"flops": 0.0, "seconds": 0.0, "calls": 0, "timed_calls": 0}
    self.cost = {"prefill_flops": 0.0, "prefill_s": 0.0, "rows_flops": 0.0, "rows_s": 0.0,
                 "queries": 0, "prefixes": 0, "demo_tokens": [], "kept": []}
    self._warm: set = set()

  def _slot(self, n: int) -> int:
    """The demonstration slot for n real tokens: rounded up to SLOT_BUCKET, at most the
    training slot. Positions come from the mask, so the slot's padding changes no
    output (tested); a tight slot is what makes the distiller cheap."""
    return min(self.td, -(-max(n, 1) // SLOT_BUCKET) * SLOT_BUCKET)

  def _slot_flops(self, slot: int) -> float:
    if slot not in self._flops:  # XLA counts a scanned layer once: the unrolled twin.
      shape = jax.ShapeDtypeStruct((1, slot), jnp.int32)
      lowered = jax.jit(lambda p, ids, m: self._cost_module.apply({"params": p}, ids, m)).lower(
          self.params, shape, shape)
      self._flops[slot] = flops_lib.compiled_flops(lowered.compile())
    return self._flops[slot]

  def distill(self, demos) -> tuple[jax.Array, int, int]:
    """(S_D [l, d], demonstration tokens read, demonstrations kept)."""
    tok = self.ctx.lm.tokenizer
    enc = [mend_data.encode_row(tok, ex, self.max_row_tokens)[0] for ex in demos]
    ids, kept = mend_data.pack_demonstrations(enc, self.td)
    slot = self._slot(len(ids))
    arr = np.zeros((1, slot), np.int32)
    mask = np.zeros((1, slot), np.int32)
    arr[0, :len(ids)], mask[0, :len(ids)] = ids, 1
    first = slot not in self._flops
    d = self.distiller
    d["flops"] += self._slot_flops(slot)
    start = time.perf_counter()
    s_d = jax.block_until_ready(self._fn(self.params, jnp.asarray(arr), jnp.asarray(mask)))
    if not first:  # A slot's first call compiles.
      d["seconds"] += time.perf_counter() - start
      d["timed_calls"] += 1
    d["calls"] += 1
    return s_d, len(ids), kept

  def score(self, task, seed):
    ctx, scorer, cost = self.ctx, self.ctx.scorer, self.cost
    rows, counts = prompts.query_rows(ctx.lm.tokenizer, task.queries, False, ctx.prompt)
    s_d, n_tok, kept = self.distill(task.demonstrations(ctx.k, seed))
    rows_len = scorer.rows_len(rows)
    if (task.name, rows_len) not in self._warm:  # Compile outside the measured calls.
      scorer.score_with_prefix(scorer.prefill(prefix_embeds=s_d, rows_len=rows_len), rows)
      self._warm.add((task.name, rows_len))
    f0, s0 = scorer.meter.flops, scorer.meter.seconds
    prefix = scorer.prefill(prefix_embeds=s_d, rows_len=rows_len)
    f1, s1 = scorer.meter.flops, scorer.meter.seconds
    nll = prompts.split_rows(scorer.score_with_prefix(prefix, rows), counts)
    f2, s2 = scorer.meter.flops, scorer.meter.seconds
    cost["prefill_flops"] += f1 - f0
    cost["prefill_s"] += s1 - s0
    cost["rows_flops"] += f2 - f1
    cost["rows_s"] += s2 - s1
    cost["queries"] += len(task.queries)
    cost["prefixes"] += 1
    cost["demo_tokens"].append(n_tok)
    cost["kept"].append(kept)
    return nll, {"prefix_tokens": self.num_vectors, "demos_kept": kept}

  def finish(self, record):
    """The efficiency of the measured calls (the warm-up calls excluded)."""
    cost, d = self.cost, self.distiller
    nq, npfx = max(cost["queries"], 1), max(cost["prefixes"], 1)
    q_per_prefix = nq / npfx
    d_flops = d["flops"] / max(d["calls"], 1)
    d_s = d["seconds"] / max(d["timed_calls"], 1)
    rows_f, rows_s = cost["rows_flops"] / nq, cost["rows_s"] / nq
    pre_f, pre_s = cost["prefill_flops"] / npfx, cost["prefill_s"] / npfx
    record["workdir"] = self.run
    record["step"] = self.step
    record["efficiency"] = {
        # The harness's columns: S_D reused per task (the distiller's cost included).
        "flops_per_query": rows_f + (pre_f + d_flops) / q_per_prefix,
        "seconds_per_query": rows_s + (pre_s + d_s) / q_per_prefix,
        "prefix_tokens": float(self.num_vectors), "queries": cost["queries"],
        "demos_kept": float(np.mean(cost["kept"])),
        "demo_tokens": float(np.mean(cost["demo_tokens"])),
        "llm_flops_reuse": rows_f + pre_f / q_per_prefix,
        "llm_flops_per_query": rows_f + pre_f,
        "distiller_flops_per_call": d_flops,
        "total_flops_reuse": rows_f + (pre_f + d_flops) / q_per_prefix,
        "total_flops_per_query": rows_f + pre_f + d_flops,
        "seconds_reuse": rows_s + (pre_s + d_s) / q_per_prefix,
        "seconds_per_query_sd": rows_s + pre_s + d_s,
        "compression": float(np.mean(cost["demo_tokens"])) / self.num_vectors,
    }

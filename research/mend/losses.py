"""MEND's losses: the student LLM([S_D ; emb(x)]) against the teacher
LLM(demonstrations ⊕ x), the same frozen weights.

Layout (fixed slots, so every logit slice is static):
  teacher  [demonstrations: Td slots, right-padded | query: Tq slots, right-padded]
  student  [S_D: l vectors | query: Tq slots, right-padded]
Positions come from the attention masks (`default_positions`), so the padding
between the demonstrations and the query takes no position: the query sits right
after the last real demonstration token, as in an unpadded prompt. The vocabulary
projection is applied at the query slots only (the teacher's demonstration slots and
the student's S_D slots need no logits).

Per query slot j the next-token distributions are compared:
  KL_j = T² · Σ_v p_T(v) (log p_T(v) − log q_T(v)),  p_T = softmax(z_teacher / T),
                                                    q_T = softmax(z_student / T)
(T = `loss.temperature`, 1 in the paper: then the plain KL; T² keeps the gradient
scale of Hinton et al.'s distillation), averaged over the real query tokens of the
batch (per-token mean); CE is the mean NLL of the gold-output tokens (those marked by
`target_mask`) under the student at temperature 1.
L = ce_weight · CE + kl_weight · KL: stage 1 (1 → 0, λ); stage 2 (1, λ = 1);
the HyperTuning-style ablation (1, 0). The teacher is wrapped in stop_gradient
and skipped altogether when kl_weight == 0; the LLM's parameters are a closed-over
input of the loss, never differentiated (`jax.grad` is taken w.r.t. the
distiller only).

The teacher's side can come from the teacher cache (`research/mend/teacher_cache.py`)
instead of a forward pass: its log-probabilities at temperature T over the whole
vocabulary (`{"logp"}`: the KL above, exactly), or its top-k tokens with the rest of
the mass in one tail bucket (`{"ids", "logp", "tail"}`):
  KL_k = T² · [Σ_{v∈top-k} p_T(v) (log p_T(v) − log q_T(v)) + p_tail (log p_tail − log q_tail)]
with q_tail the student's mass outside the teacher's top k. KL_k is the KL of the two
distributions coarsened to k + 1 outcomes, so 0 ≤ KL_k ≤ KL (data-processing
inequality); `research/mend/bench.py` measures the gap on SmolLM2.

Dropout: `lm` / `teacher_lm` / the distiller may be train-mode twins of the frozen
modules (`LMConfig.train_mode`); their dropout masks come from `key` (the trainer's
per-step loss key), one independent stream per pass.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from models import llm


def _rngs(key):
  return None if key is None else {"dropout": key}


def student_logits(lm: llm.CausalLM, lm_params, s_d, query_ids, query_mask, key=None):
  """Logits [b, Tq, vocab] of the LLM at the query slots after the prefix S_D."""
  b, l = s_d.shape[:2]
  tok = lm.apply(lm_params, query_ids, method=llm.CausalLM.embed)
  x = jnp.concatenate([s_d.astype(tok.dtype), tok], axis=1)
  mask = jnp.concatenate([jnp.ones((b, l), jnp.int32), query_mask.astype(jnp.int32)], axis=1)
  hidden = lm.apply(lm_params, inputs_embeds=x, attention_mask=mask,
                    method=llm.CausalLM.hidden, rngs=_rngs(key))
  return lm.apply(lm_params, hidden[:, l:], method=llm.CausalLM.head)


def teacher_logits(lm: llm.CausalLM, lm_params, demo_ids, demo_mask, query_ids, query_mask,
                   key=None):
  """Logits [b, Tq, vocab] of the LLM at the query slots after the demonstrations
  (no gradient)."""
  ids = jnp.concatenate([demo_ids, query_ids], axis=1)
  mask = jnp.concatenate([demo_mask, query_mask], axis=1).astype(jnp.int32)
  hidden = lm.apply(lm_params, ids, attention_mask=mask, method=llm.CausalLM.hidden,
                    rngs=_rngs(key))
  logits = lm.apply(lm_params, hidden[:, demo_ids.shape[1]:], method=llm.CausalLM.head)
  return jax.lax.stop_gradient(logits)


def log_probs(logits, temperature: float = 1.0):
  return jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, -1)


def kl_per_token(teacher, student, temperature: float = 1.0):
  """KL(teacher ‖ student) of the next-token distributions at temperature T, times T²,
  [b, t] (from logits)."""
  return kl_from_logp(log_probs(teacher, temperature), student, temperature)


def kl_from_logp(teacher_logp, student, temperature: float = 1.0):
  """The same from the teacher's full-vocabulary log-probabilities at temperature T."""
  ls = log_probs(student, temperature)
  kl = jnp.sum(jnp.exp(teacher_logp) * (teacher_logp - ls), axis=-1)
  return kl * temperature**2


def teacher_topk(teacher, k: int, temperature: float = 1.0):
  """The teacher's top-k tokens, their log-probabilities at temperature T and the log
  of the remaining mass: {"ids" [b, t, k], "logp" [b, t, k], "tail" [b, t]}."""
  lt = log_probs(teacher, temperature)
  logp, ids = jax.lax.top_k(lt, k)
  rest = _outside(lt, ids)
  return {"ids": ids.astype(jnp.int32), "logp": logp,
          "tail": jax.nn.logsumexp(rest, axis=-1)}


def _outside(logp, ids):
  """`logp` [b, t, V] with the entries at `ids` [b, t, k] set to -inf."""
  b, t, _ = logp.shape
  bi = jnp.arange(b)[:, None, None]
  ti = jnp.arange(t)[None, :, None]
  return logp.at[bi, ti, ids].set(-jnp.inf)


def kl_topk(cached, student, temperature: float = 1.0):
  """KL of the teacher's top-k + tail bucket against the student's same k + 1 outcomes
  (the module docstring), times T², [b, t]."""
  ls = log_probs(student, temperature)
  ids, lp, lp_tail = cached["ids"], cached["logp"], cached["tail"]
  ls_k = jnp.take_along_axis(ls, ids, axis=-1)
  # k < vocabulary (checked with the config): the tail is never empty for the student.
  ls_tail = jax.nn.logsumexp(_outside(ls, ids), axis=-1)
  head = jnp.sum(jnp.exp(lp) * (lp - ls_k), axis=-1)
  p_tail = jnp.exp(lp_tail)
  has_tail = p_tail > 0  # A teacher whose whole mass is in its top k has no tail term.
  lp_tail = jnp.where(has_tail, lp_tail, 0.0)
  tail = jnp.where(has_tail, p_tail * (lp_tail - ls_tail), 0.0)
  return (head + tail) * temperature**2


def ce_per_token(logits, query_ids, target_mask):
  """NLL [b, Tq-1] of query token j+1 from slot j, and its weights (target tokens)."""
  logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), -1)
  nll = -jnp.take_along_axis(logp, query_ids[:, 1:, None], axis=-1)[..., 0]
  return nll, target_mask[:, 1:].astype(jnp.float32)


def masked_mean(x, w):
  return jnp.sum(x * w) / jnp.maximum(jnp.sum(w), 1.0)


def mend_loss(distiller, distiller_params, lm, lm_params, batch, *, ce_weight: float,
              kl_weight: float, temperature: float = 1.0, teacher_lm=None, cached=None,
              key=None):
  """(loss, metrics) for a batch {demo_ids, demo_mask, query_ids, query_mask,
  target_mask}; differentiable w.r.t. `distiller_params` only.

  `lm` runs the student pass, `teacher_lm` (default `lm`) the teacher pass: the same
  parameters, either module possibly in train mode (dropout from `key`). `cached`: the
  teacher's outputs from the cache for this batch ({"logp"} full vocabulary or
  {"ids", "logp", "tail"} top-k, at `temperature`), replacing the teacher pass.
  """
  lm_params = jax.lax.stop_gradient(lm_params)
  teacher_lm = lm if teacher_lm is None else teacher_lm
  k_dist, k_student, k_teacher = (None,) * 3 if key is None else jax.random.split(key, 3)
  s_d = distiller.apply({"params": distiller_params}, batch["demo_ids"], batch["demo_mask"],
                        rngs=_rngs(k_dist))
  student = student_logits(lm, lm_params, s_d, batch["query_ids"], batch["query_mask"],
                           key=k_student)
  qmask = batch["query_mask"].astype(jnp.float32)
  metrics = {}
  loss = jnp.zeros((), jnp.float32)
  if kl_weight:
    if cached is None:
      teacher = teacher_logits(teacher_lm, lm_params, batch["demo_ids"], batch["demo_mask"],
                               batch["query_ids"], batch["query_mask"], key=k_teacher)
      kl_tok = kl_per_token(teacher, student, temperature)
      # How much the demonstrations matter to the teacher on the gold tokens (a
      # useless teacher makes distillation vacuous).
      if ce_weight:
        nll_t, w = ce_per_token(teacher, batch["query_ids"], batch["target_mask"])
        metrics["teacher_ce"] = masked_mean(nll_t, w)
    elif "ids" in cached:
      kl_tok = kl_topk(jax.lax.stop_gradient(cached), student, temperature)
    else:
      kl_tok = kl_from_logp(jax.lax.stop_gradient(cached["logp"]), student, temperature)
    kl = masked_mean(kl_tok, qmask)
    loss = loss + kl_weight * kl
    metrics["kl"] = kl
  nll, w = ce_per_token(student, batch["query_ids"], batch["target_mask"])
  ce = masked_mean(nll, w)
  metrics["ce"] = ce
  if ce_weight:
    loss = loss + ce_weight * ce
  metrics["loss"] = loss
  return loss, metrics

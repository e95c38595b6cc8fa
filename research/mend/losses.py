"""MEND's losses: the student LLM([S_D ; emb(x)]) against the teacher
LLM(demonstrations ⊕ x), the same frozen weights.

Layout (fixed slots, so every logit slice is static):
  teacher  [demonstrations: Td slots, right-padded | query: Tq slots, right-padded]
  student  [S_D: l vectors | query: Tq slots, right-padded]
Positions come from the attention masks (`default_positions`), so the padding
between the demonstrations and the query takes no position: the query sits right
after the last real demonstration token, as in an unpadded prompt.

Per query slot j the next-token distributions are compared:
  KL_j = Σ_v p_teacher(v) (log p_teacher(v) − log p_student(v))   (temperature 1)
averaged over the real query tokens of the batch (per-token mean); CE is the mean
NLL of the gold-output tokens (those marked by `target_mask`) under the student.
L = ce_weight · CE + kl_weight · KL: stage 1 (1 → 0, λ); stage 2 (1, λ = 1);
the HyperTuning-style ablation (1, 0). The teacher is wrapped in stop_gradient
and skipped altogether when kl_weight == 0; the LLM's parameters are a closed-over
input of the loss, never differentiated (`jax.grad` is taken w.r.t. the
distiller only).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from models import llm


def student_logits(lm: llm.CausalLM, lm_params, s_d, query_ids, query_mask):
  """Logits [b, Tq, vocab] of the LLM at the query slots after the prefix S_D."""
  b, l = s_d.shape[:2]
  tok = lm.apply(lm_params, query_ids, method=llm.CausalLM.embed)
  x = jnp.concatenate([s_d.astype(tok.dtype), tok], axis=1)
  mask = jnp.concatenate([jnp.ones((b, l), jnp.int32), query_mask.astype(jnp.int32)], axis=1)
  logits = lm.apply(lm_params, inputs_embeds=x, attention_mask=mask)
  return logits[:, l:]


def teacher_logits(lm: llm.CausalLM, lm_params, demo_ids, demo_mask, query_ids, query_mask):
  """Logits [b, Tq, vocab] of the LLM at the query slots after the demonstrations
  (no gradient)."""
  ids = jnp.concatenate([demo_ids, query_ids], axis=1)
  mask = jnp.concatenate([demo_mask, query_mask], axis=1).astype(jnp.int32)
  logits = lm.apply(lm_params, ids, attention_mask=mask)
  return jax.lax.stop_gradient(logits[:, demo_ids.shape[1]:])


def kl_per_token(teacher, student):
  """KL(teacher ‖ student) of the next-token distributions, [b, t] (temperature 1)."""
  lt = jax.nn.log_softmax(teacher.astype(jnp.float32), -1)
  ls = jax.nn.log_softmax(student.astype(jnp.float32), -1)
  return jnp.sum(jnp.exp(lt) * (lt - ls), axis=-1)


def ce_per_token(logits, query_ids, target_mask):
  """NLL [b, Tq-1] of query token j+1 from slot j, and its weights (target tokens)."""
  logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), -1)
  nll = -jnp.take_along_axis(logp, query_ids[:, 1:, None], axis=-1)[..., 0]
  return nll, target_mask[:, 1:].astype(jnp.float32)


def masked_mean(x, w):
  return jnp.sum(x * w) / jnp.maximum(jnp.sum(w), 1.0)


def mend_loss(distiller, distiller_params, lm, lm_params, batch, *, ce_weight: float,
              kl_weight: float):
  """(loss, metrics) for a batch {demo_ids, demo_mask, query_ids, query_mask,
  target_mask}; differentiable w.r.t. `distiller_params` only."""
  lm_params = jax.lax.stop_gradient(lm_params)
  s_d = distiller.apply({"params": distiller_params}, batch["demo_ids"], batch["demo_mask"])
  student = student_logits(lm, lm_params, s_d, batch["query_ids"], batch["query_mask"])
  qmask = batch["query_mask"].astype(jnp.float32)
  metrics = {}
  loss = jnp.zeros((), jnp.float32)
  if kl_weight:
    teacher = teacher_logits(lm, lm_params, batch["demo_ids"], batch["demo_mask"],
                             batch["query_ids"], batch["query_mask"])
    kl = masked_mean(kl_per_token(teacher, student), qmask)
    loss = loss + kl_weight * kl
    metrics["kl"] = kl
    # How much the demonstrations matter to the teacher on the gold tokens (a
    # useless teacher makes distillation vacuous).
    if ce_weight:
      nll_t, w = ce_per_token(teacher, batch["query_ids"], batch["target_mask"])
      metrics["teacher_ce"] = masked_mean(nll_t, w)
  nll, w = ce_per_token(student, batch["query_ids"], batch["target_mask"])
  ce = masked_mean(nll, w)
  metrics["ce"] = ce
  if ce_weight:
    loss = loss + ce_weight * ce
  metrics["loss"] = loss
  return loss, metrics

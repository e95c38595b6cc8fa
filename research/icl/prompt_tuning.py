"""Prompt tuning (Lester et al. 2021), MEND's baseline, as a trainer experiment
("prompt_tuning"): n soft vectors trained on the meta-train tasks of a partition,
the LLM frozen.

The soft prompt [n, d] is the only parameter (the trainer's state, optimizer and
checkpoints hold nothing else); the LLM's parameters are a `frozen` input of the
jitted step. Loss: the mean NLL of the gold output " y" given [soft prompt; x]
(MetaICL's direct, zero-shot form), the quantity the evaluation scores with the
soft prompt prefilled into the KV cache (`research/icl/methods/prompt_tuning.py`).

Batches (host pipeline): task drawn uniformly, then a row, from
`numpy.random.default_rng([config.seed, step])`; the soft prompt starts from
`jax.random.key(config.seed)`. Both are what the pre-trainer implementation did, so
its committed results reproduce; it means one seed per run (`train.num_seeds` = 1).

  python -m launch.main --config experiments/icl/prompt_tuning.py --workdir runs/pt

The `icl_eval` and `mend_eval` runners train it in `<workdir>/prompt_tuning` when
their methods include "prompt_tuning" (`research/icl/methods/prompt_tuning.py`).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from research import config as config_lib
from research import experiment as experiment_lib
from research import metrics as metrics_lib
from research import sharding
from research.errors import ConfigError, check_positive, require
from research.llm import defaults as llm_defaults
from research.llm import lm as lm_lib
from research.llm import scoring
from research.llm.metaicl import data as icl_data
from research.llm.metaicl import defaults as metaicl_defaults
from research.llm.metaicl import suite

INITS = ("vocab", "normal")


def trainer_part() -> ml_collections.ConfigDict:
  """Every key but the LLM (`model`) and the tasks (`data`): what an evaluation's
  `prompt_tuning` section holds."""
  c = config_lib.trainer_sections(ml_collections.ConfigDict())
  c.prompt = ml_collections.ConfigDict(dict(
      num_vectors=16,               # Soft vectors n.
      init="vocab",                 # vocab: random rows of the embedding table | normal (0.02).
      max_row_tokens=96,            # Query + output tokens per training row (cut beyond).
      max_rows_per_task=512,        # Meta-train rows read per task.
  ))
  c.optimizer.update(name="adam", learning_rate=3e-3)
  c.train.update(num_steps=300, batch_size=8, log_every=15, eval_every=300,
                 checkpoint_every=100, keep_checkpoints=1, tensorboard=False, progress=False)
  c.eval = ml_collections.ConfigDict(dict(
      num_batches=2,                # Fixed batches of meta-train rows for `val_loss`.
  ))
  return c


def get_config() -> ml_collections.ConfigDict:
  """The defaults of a prompt-tuning run: 16 vectors, 300 steps of Adam 3e-3 at batch 8
  on the class_to_class meta-train tasks of the offline suite, SmolLM2 frozen."""
  c = trainer_part()
  c.task = "prompt_tuning"
  c.model = llm_defaults.model_section()
  c.data = metaicl_defaults.data_section()
  return c


def validate(config) -> None:
  check_positive(config, "prompt.num_vectors", "prompt.max_row_tokens",
                 "prompt.max_rows_per_task", "eval.num_batches")
  require(config.prompt.init in INITS,
          f"config.prompt.init={config.prompt.init!r}; use one of {INITS}")
  require(config.train.num_seeds == 1,
          "prompt tuning draws its batches and initial prompt from config.seed: one seed per "
          "run (config.train.num_seeds=1); run other seeds as separate runs")


def encode_rows(tok, rows, max_row_tokens: int) -> list[tuple[list[int], list[int]]]:
  """(x, " y") tokens per row, x cut so the row fits `max_row_tokens`."""
  enc = []
  for r in rows:
    x = tok.encode(r["input"])
    y = tok.encode(" " + r["output"])
    x = x[:max(1, max_row_tokens - len(y))]
    y = y[:max_row_tokens - len(x)]
    enc.append((x, y))
  return enc


def make_batch(encoded: dict[str, list], rng: np.random.Generator, batch_size: int,
               max_row_tokens: int) -> dict[str, np.ndarray]:
  """`batch_size` rows: a task uniformly, then one of its rows (right-padded)."""
  tasks = sorted(encoded)
  t = max_row_tokens
  out = {"ids": np.zeros((batch_size, t), np.int32), "mask": np.zeros((batch_size, t), np.int32),
         "ctx_len": np.zeros((batch_size,), np.int32),
         "opt_len": np.zeros((batch_size,), np.int32)}
  for b in range(batch_size):
    rows = encoded[tasks[rng.integers(len(tasks))]]
    x, y = rows[rng.integers(len(rows))]
    out["ids"][b, :len(x) + len(y)] = x + y
    out["mask"][b, :len(x) + len(y)] = 1
    out["ctx_len"][b], out["opt_len"][b] = len(x), len(y)
  return out


def train_batch(encoded, seed: int, step: int, batch_size: int, max_row_tokens: int):
  return make_batch(encoded, np.random.default_rng([seed, step]), batch_size, max_row_tokens)


def eval_batch(encoded, seed: int, i: int, batch_size: int, max_row_tokens: int):
  return make_batch(encoded, np.random.default_rng([seed, 0, i]), batch_size, max_row_tokens)


def init_soft_prompt(adapter: scoring.CausalLMAdapter, params, num_vectors: int, init: str,
                     seed: int) -> jax.Array:
  key = jax.random.key(seed)
  if init == "vocab":
    ids = jax.random.randint(key, (1, num_vectors), 0, adapter.config.vocab_size)
    return adapter.embed(params, ids)[0].astype(jnp.float32)
  d = adapter.config.d_model
  return 0.02 * jax.random.normal(key, (num_vectors, d), jnp.float32)


def soft_prompt_loss(soft, params, adapter, ids, mask, ctx_len, opt_len):
  """Mean NLL of the output tokens after [soft; x]; gradient w.r.t. `soft` only."""
  params = jax.lax.stop_gradient(params)
  b, n = ids.shape[0], soft.shape[0]
  tok_emb = adapter.embed(params, ids)
  embeds = jnp.concatenate([jnp.broadcast_to(soft.astype(tok_emb.dtype), (b,) + soft.shape),
                            tok_emb], axis=1)
  full_mask = jnp.concatenate([jnp.ones((b, n), mask.dtype), mask], axis=1)
  hidden, _ = adapter.hidden(params, inputs_embeds=embeds, attention_mask=full_mask)
  full_ids = jnp.concatenate([jnp.zeros((b, n), ids.dtype), ids], axis=1)
  _, nll = scoring.option_nll(adapter, params, hidden, full_ids, ctx_len + n, opt_len,
                              int(ids.shape[1]))
  return nll.mean()


def training_rows(config) -> tuple[str, dict[str, list]]:
  """(task root, {meta-train task: rows}) of `config.data`."""
  d = config.data
  root = d.root or suite.prepare(d.suite_dir or "runs", seed=d.suite_seed, n_test=d.n_test,
                                 max_train=d.max_train)
  part = icl_data.load_partition(root, d.partition)
  rows = {t: icl_data.load_meta_train(root, t)[:config.prompt.max_rows_per_task]
          for t in part.train}
  return root, {t: r for t, r in rows.items() if r}


@experiment_lib.EXPERIMENTS.register("prompt_tuning", defaults=get_config)
def build(config, mesh) -> experiment_lib.Experiment:
  validate(config)
  lm = llm_defaults.load(config)
  rules = sharding.rules_from_config(config.sharding.rules)
  lm_params = lm_lib.place(lm, rules, mesh)
  adapter = lm.adapter
  root, rows = training_rows(config)
  if not rows:
    raise ConfigError(f"partition {config.data.partition!r} of {root} has no meta-train rows "
                      f"to tune a prompt on")
  p = config.prompt
  encoded = {t: encode_rows(lm.tokenizer, r, p.max_row_tokens) for t, r in rows.items()}
  bs, seed = config.train.batch_size, config.seed

  # The initial prompt is a function of config.seed (see the module docstring).
  soft0 = np.asarray(init_soft_prompt(adapter, lm.params, p.num_vectors, p.init, seed))

  def init_params(key):
    del key
    return {"soft": nn.Partitioned(jnp.asarray(soft0), names=("length", "embed"))}

  def host_batch(key, start, stop, step):
    del key  # A function of (config.seed, step), as before the trainer.
    batch = train_batch(encoded, seed, step, bs, p.max_row_tokens)
    return {k: v[start:stop] for k, v in batch.items()}

  def loss_fn(params, frozen, batch, key):
    del key
    loss = soft_prompt_loss(params["soft"], frozen["lm"], adapter, batch["ids"], batch["mask"],
                            batch["ctx_len"], batch["opt_len"])
    return loss, {"loss": loss}

  val = [eval_batch(encoded, seed, i, bs, p.max_row_tokens) for i in range(config.eval.num_batches)]
  val_loss = jax.jit(lambda soft, lm_p, b: soft_prompt_loss(soft, lm_p, adapter, b["ids"],
                                                            b["mask"], b["ctx_len"], b["opt_len"]))

  def evaluate(params, frozen, step):
    del step
    return {"val_loss": float(np.mean([float(val_loss(params["soft"], frozen["lm"], b))
                                       for b in val]))}

  def report(params, frozen, workdir, final):
    del params, frozen
    rows_ = metrics_lib.read_metrics(workdir, "train")
    if rows_:
      final["first_loss"] = rows_[0]["loss"]
      final["last_loss"] = float(np.mean([r["loss"] for r in rows_[-10:]]))
    return (f"prompt tuning ({len(encoded)} meta-train tasks of {config.data.partition}): "
            f"val_loss {final['val_loss']:.4f}")

  return experiment_lib.Experiment(
      init_params=init_params, sample_batch=None, loss_fn=loss_fn, evaluate=evaluate,
      report=report, host_batch=host_batch, frozen={"lm": lm_params},
      info={"train_tasks": len(encoded), "num_vectors": p.num_vectors,
            "train_rows": sum(len(r) for r in encoded.values())},
      objects={"lm": lm, "train_tasks": sorted(encoded), "root": root})

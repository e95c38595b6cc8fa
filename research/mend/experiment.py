"""MEND's two training stages as trainer `Experiment`s.

  config.task = "mend_pretrain"   stage 1, meta-distillation pretraining on plain text:
                                  the first 80 % of a document are the demonstrations,
                                  the last 20 % the query; loss = KL only.
  config.task = "mend_finetune"   stage 2, meta-distillation fine-tuning on the meta-train
                                  tasks of `config.data.partition`: K random demonstrations
                                  of the query's task; loss = CE + λ·KL
                                  (`loss.kl_weight = 0` is the HyperTuning-style ablation).

Only the distiller's parameters are trainable (`init_params`); the frozen LLM's
parameters are a `frozen` input of the step (placed once, sharded by the same
logical rules as everything else) and never reach the optimizer. Stage 2 starts
from a stage-1 workdir (`config.init_from`, its newest checkpoint restored with orbax)
or from scratch ("" = MEND without stage 1); stage 1 can continue an earlier stage-1
run the same way (a new optimizer and schedule, the distiller's weights kept).

Validation (what `evaluate` reports, and the only thing checkpoint selection could look
at): stage 1, held-out documents; stage 2, rows held out from the *meta-train* tasks
(`data.val_rows` per task). The meta-test tasks are never loaded here.
"""
from __future__ import annotations

import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from models import distiller as distiller_lib
from models import llm
from research import experiment as experiment_lib
from research import sharding
from research.errors import ConfigError, first_line, require
from research.llm import defaults as llm_defaults
from research.llm import lm as lm_lib
from research.llm.metaicl import data as icl_data
from research.llm.metaicl import generator
from research.mend import data as mend_data
from research.mend import defaults
from research.mend import episodes as episodes_lib
from research.mend import losses
from research.mend import teacher_cache

STAGES = {"mend_pretrain": 1, "mend_finetune": 2}


# --------------------------------------------------------------------------------------
# Models.
# --------------------------------------------------------------------------------------

def distiller_lm_config(config, llm_cfg: llm.LMConfig) -> llm.LMConfig:
  d = config.distiller
  if d.init == "llm":  # The first layers of the LLM itself.
    return llm_cfg.replace(num_layers=d.num_layers, scan_unroll=1)
  return llm.LMConfig(arch="llama", vocab_size=llm_cfg.vocab_size, d_model=d.d_model,
                      num_layers=d.num_layers, num_heads=d.num_heads,
                      num_kv_heads=d.num_kv_heads, head_dim=d.d_model // d.num_heads,
                      mlp_dim=d.mlp_dim, max_len=4096, tie_embeddings=True)


def embedding_rms(lm_params) -> float:
  """Median RMS of the LLM's token-embedding rows: the scale S_D should start at."""
  emb = np.asarray(nn.unbox(lm_params)["params"]["embed"], np.float32)
  return float(np.median(np.sqrt(np.mean(emb**2, -1))))


def make_distiller(config, llm_cfg: llm.LMConfig, lm_params) -> distiller_lib.Distiller:
  """The distiller of `config`; `lm_params` (the frozen LLM) set the initial S_D scale
  when `distiller.match_embedding_scale`."""
  d = config.distiller
  rms = embedding_rms(lm_params) if d.match_embedding_scale else 0.0
  return distiller_lib.Distiller(distiller_lm_config(config, llm_cfg),
                                 num_vectors=d.num_vectors, out_dim=llm_cfg.d_model,
                                 placeholder_init=d.placeholder_init, embedding_rms=rms)


def restore_params(workdir: str):
  """The distiller params of the newest checkpoint in a trainer workdir (host arrays;
  `config.init_from`: the shapes are checked against the new run's distiller)."""
  workdir = os.path.abspath(workdir)
  if not os.path.isdir(workdir):
    raise ConfigError(f"config.init_from={workdir!r}: no such run directory")
  mngr = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"),
                               item_names=("state", "meta"))
  step = mngr.latest_step()
  if step is None:
    raise ConfigError(f"config.init_from={workdir!r} holds no checkpoint; train it first")
  out = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  mngr.close()
  return jax.tree.map(np.asarray, out["state"]["params"])


def replace_values(boxed, values):
  """`boxed` (nn.Partitioned leaves) with the arrays of `values` (same structure)."""
  is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)
  def put(box, v):
    ref = nn.unbox(box)
    if tuple(ref.shape) != tuple(v.shape):
      raise ConfigError(f"config.init_from: its distiller has a parameter of shape "
                        f"{tuple(v.shape)} where this config's has {tuple(ref.shape)}; "
                        "config.distiller must match the run named by config.init_from")
    v = jnp.asarray(v, ref.dtype)
    return box.replace_boxed(v) if is_box(box) else v
  try:
    return jax.tree.map(put, boxed, values, is_leaf=is_box)
  except ConfigError:
    raise
  except ValueError as e:  # Another structure (e.g. distiller.init llm vs random).
    raise ConfigError("config.init_from: its distiller's parameters are not this config's "
                      f"({first_line(e, 200)}); config.distiller must match the run "
                      "named by config.init_from") from None


# --------------------------------------------------------------------------------------
# Data.
# --------------------------------------------------------------------------------------

def stage1_data(config, tok):
  d = config.data
  if d.corpus == "offline":
    docs = mend_data.offline_corpus()
  elif d.corpus == "c4":
    docs = mend_data.c4_documents(d.num_documents, data_dir=d.tfds_data_dir or None)
  else:
    raise ConfigError(f"config.data.corpus={d.corpus!r}; use 'offline' or 'c4'")
  if d.num_documents:
    docs = docs[:d.num_documents]
  train = [x for x in docs if not mend_data.is_held_out(x)]
  val = [x for x in docs if mend_data.is_held_out(x)] or train[:1]
  enc = lambda ds: mend_data.encode_documents(tok, ds, d.window, d.min_tokens)
  return enc(train), enc(val), {"documents": len(docs)}


def task_root(config) -> str:
  """`config.data.root`, or the offline suite generated under data.suite_dir (runs/)."""
  return generator.root_for(config.data, config.data.suite_dir or "runs")


def stage2_data(config, tok):
  """(train pool, validation pool, info): the partition's meta-train rows, minus the rows
  held out for validation, or, with `data.val_partition`, the rows of that partition's
  test tasks (held-out tasks) for validation."""
  d = config.data
  root = task_root(config)
  part = icl_data.load_partition(root, d.partition)
  val_tasks = ()
  if d.val_partition:
    val_tasks = icl_data.load_partition(root, d.val_partition).test
    both = sorted(set(val_tasks) & set(part.train))
    require(not both, f"config.data.val_partition={d.val_partition!r}: its test tasks {both} "
                      f"are meta-train tasks of {d.partition!r}; validation tasks must be held out")
  train_rows, val_rows = {}, {}
  for t in part.train:  # Meta-train tasks only: the meta-test tasks are never read.
    rows = icl_data.load_meta_train(root, t)[:d.max_train]
    n_val = d.val_rows if not val_tasks and len(rows) >= 4 * d.val_rows else 0
    train_rows[t] = rows[:len(rows) - n_val]
    if n_val:
      val_rows[t] = rows[len(rows) - n_val:]
  for t in val_tasks:  # Held-out tasks: their meta-train rows are validation rows.
    val_rows[t] = icl_data.load_meta_train(root, t)[:d.max_train]
  pools = []
  for rows in (train_rows, val_rows or train_rows):
    p = mend_data.encode_task_pool(tok, rows, d.max_row_tokens)
    pools.append(p)
  return pools[0], pools[1], {"train_tasks": len(part.train), "root": root,
                              "val_tasks": len(val_tasks),
                              "train_rows": int(pools[0]["ids"].shape[0])}


def teacher_cache_dir(config) -> str:
  return config.teacher.cache_dir or os.path.join(config.data.suite_dir or "runs",
                                                  "mend_teacher_cache")


def episode_table(config, lm, pool, td: int):
  """(table arrays, bucket shapes, cached teacher arrays, info) of `data.episodes`."""
  d = config.data
  table = episodes_lib.build_table(pool, k=d.k, td=td, num_episodes=d.episodes,
                                   seed=d.episode_seed)
  # The query slot: the longest query of the table, rounded up (≤ max_row_tokens).
  tq = int(min(d.max_row_tokens, -(-table["query_len"].max() // episodes_lib.QUERY_QUANTUM)
               * episodes_lib.QUERY_QUANTUM))
  live = config.teacher.cache == "none" and config.loss.kl_weight > 0
  shapes, assign = episodes_lib.make_buckets(
      table, d.buckets, td, tq, num_vectors=config.distiller.num_vectors,
      distiller_layers=config.distiller.num_layers, llm_layers=lm.config.num_layers,
      live_teacher=live)
  arrays = episodes_lib.device_table(table, assign, len(shapes), tq)
  extra, info = {}, {"episodes": d.episodes, "buckets": [list(s) for s in shapes],
                     "bucket_sizes": np.bincount(assign, minlength=len(shapes)).tolist()}
  if config.teacher.cache != "none":
    cache = teacher_cache.TeacherCache(teacher_cache_dir(config), lm, config.teacher.cache,
                                       config.teacher.top_k, config.loss.temperature)
    extra = cache.get(table, tq)
    info.update(teacher_cache=cache.directory, teacher_cache_hits=cache.stats["hits"],
                teacher_cache_computed=cache.stats["computed"],
                teacher_cache_fill_s=round(cache.stats["fill_seconds"], 1))
  return arrays, shapes, extra, info


def _device_pool(pool, mesh):
  return {k: sharding.put_replicated(v, mesh) for k, v in pool.items()}


# --------------------------------------------------------------------------------------
# The experiment.
# --------------------------------------------------------------------------------------

def validate(config) -> None:
  require(config.task in STAGES, f"config.task={config.task!r}; use one of {sorted(STAGES)}")
  d = config.distiller
  require(d.init in ("random", "llm"), f"config.distiller.init={d.init!r}; use 'random' or 'llm'")
  require(d.placeholder_init in distiller_lib.PLACEHOLDER_INITS,
          f"config.distiller.placeholder_init={d.placeholder_init!r}; use one of "
          f"{distiller_lib.PLACEHOLDER_INITS}")
  require(d.init == "llm" or d.d_model % d.num_heads == 0,
          f"config.distiller.d_model={d.d_model} must be a multiple of num_heads={d.num_heads}")
  require(config.loss.ce_weight >= 0 and config.loss.kl_weight >= 0,
          "config.loss.ce_weight and kl_weight must be >= 0")
  require(config.loss.ce_weight + config.loss.kl_weight > 0,
          "config.loss: ce_weight and kl_weight are both 0: nothing to train")
  for key in ("distiller", "student", "teacher"):
    rate = config.dropout[key]
    require(0.0 <= rate < 1.0, f"config.dropout.{key}={rate} must be in [0, 1)")
  require(config.loss.temperature > 0,
          f"config.loss.temperature={config.loss.temperature} must be > 0")
  if STAGES[config.task] == 2:
    d, t = config.data, config.teacher
    require(d.max_length > d.max_row_tokens,
            f"config.data.max_length={d.max_length} must exceed max_row_tokens="
            f"{d.max_row_tokens} (the teacher's demonstrations + query)")
    require(d.episodes >= 0 and d.buckets >= 1,
            f"config.data.episodes={d.episodes} must be >= 0 and buckets={d.buckets} >= 1")
    require(d.buckets == 1 or d.episodes > 0,
            f"config.data.buckets={d.buckets} needs a table of episodes "
            f"(--config.data.episodes=N): lengths are known only for a table")
    require(t.cache in teacher_cache.MODES,
            f"config.teacher.cache={t.cache!r}; use one of {teacher_cache.MODES}")
    if t.cache != "none":
      require(d.episodes > 0, f"config.teacher.cache={t.cache!r} caches the teacher on a table "
                              f"of episodes: set --config.data.episodes=N")
      require(config.dropout.teacher == 0.0,
              f"config.dropout.teacher={config.dropout.teacher}: a teacher with dropout is "
              f"random, so it cannot be cached; use teacher.cache=none or dropout.teacher=0")
      require(config.loss.kl_weight > 0, "config.teacher.cache is set but loss.kl_weight=0 "
                                         "never reads the teacher; use teacher.cache=none")
      require(t.cache != "topk" or t.top_k >= 1, "config.teacher.top_k must be >= 1")
  else:
    require(config.data.min_tokens >= 5 and config.data.window >= config.data.min_tokens,
            "config.data: need window >= min_tokens >= 5")


def build(config, mesh) -> experiment_lib.Experiment:
  validate(config)
  stage = STAGES[config.task]
  lm = llm_defaults.load(config)
  lm_params = lm_lib.place(lm, sharding.rules_from_config(config.sharding.rules), mesh)
  distiller = make_distiller(config, lm.config, lm.params)
  # Training twins of the same parameters with dropout (identical to the evaluation
  # modules when the rates are 0); the dropout keys come from the trainer's loss key.
  drop = config.dropout
  train_distiller = distiller.clone(lm_config=distiller.lm_config.train_mode(drop.distiller))
  student_lm = llm.CausalLM(lm.config.train_mode(drop.student))
  teacher_lm = llm.CausalLM(lm.config.train_mode(drop.teacher))
  bs = config.train.batch_size
  frozen = {"lm": lm_params}
  shapes = None  # Stage 2 with a table: the buckets' (demonstration, query) slots.

  if stage == 1:
    train_np, val_np, data_info = stage1_data(config, lm.tokenizer)
    train, val = _device_pool(train_np, mesh), _device_pool(val_np, mesh)
    sample = lambda key, pool, n: mend_data.sample_rows(key, pool, n)
    td = train_np["demo_ids"].shape[1]
  else:
    train_np, val_np, data_info = stage2_data(config, lm.tokenizer)
    val = _device_pool(val_np, mesh)
    td = config.data.max_length - config.data.max_row_tokens
    # Static: the episode sampler's slot range (a Python int, not a step input).
    max_count = int(max(train_np["count"].max(), val_np["count"].max()))
    sample = lambda key, pool, n: mend_data.sample_episodes(
        key, dict(pool, max_count=max_count), n, config.data.k, td)
    if config.data.episodes:
      table, shapes, extra, table_info = episode_table(config, lm, train_np, td)
      data_info.update(table_info)
      train = _device_pool(table, mesh)
      frozen["teacher"] = _device_pool(extra, mesh)
    else:
      train = _device_pool(train_np, mesh)
  frozen.update(train=train, val=val)

  # Stage 2 from stage 1, or stage 1 continued.
  restored = restore_params(config.init_from) if config.init_from else None

  def init_params(key):
    demo = jnp.zeros((1, td), jnp.int32)
    params = distiller.init(key, demo, jnp.ones_like(demo))["params"]
    if restored is not None:
      # Another number of distilled vectors than the init_from run's: its distiller LM is
      # restored, the l placeholders start fresh (they are one input row per vector).
      fresh = nn.unbox(params["placeholders"])
      same_l = restored["placeholders"].shape == fresh.shape
      return replace_values(params, restored if same_l else {**restored, "placeholders": fresh})
    if config.distiller.init == "llm":
      return distiller_lib.init_from_llm(params, lm.params, config.distiller.num_layers)
    return params

  def sample_batch(frozen, key, step):
    del step
    if shapes is not None:
      return episodes_lib.sample(key, frozen["train"], bs, frozen["teacher"])
    return sample(key, frozen["train"], bs)

  loss_kw = dict(ce_weight=config.loss.ce_weight, kl_weight=config.loss.kl_weight,
                 temperature=config.loss.temperature)

  def loss_at(shape, params, frozen_lm, batch, key):
    if shape is not None:
      batch = episodes_lib.at_shape(batch, *shape)
    return losses.mend_loss(train_distiller, params, student_lm, frozen_lm, batch,
                            teacher_lm=teacher_lm, cached=teacher_cache.cached_outputs(batch),
                            key=key, **loss_kw)

  def loss_fn(params, frozen, batch, key):
    if shapes is None or len(shapes) == 1:
      return loss_at(None if shapes is None else shapes[0], params, frozen["lm"], batch, key)
    # One branch per bucket, each at its static shape; only the drawn one runs.
    branches = [functools.partial(loss_at, s) for s in shapes]
    return jax.lax.switch(batch["bucket"][0], branches, params, frozen["lm"], batch, key)

  # Validation: fixed keys, held-out documents / meta-train rows; KL and CE both reported.
  eval_kw = dict(ce_weight=1.0, kl_weight=1.0)

  @functools.partial(jax.jit, out_shardings=sharding.replicated(mesh))
  def eval_batch(params, frozen_lm, pool, key):
    batch = sample(key, pool, config.eval.batch_size)
    _, m = losses.mend_loss(distiller, params, lm.model, frozen_lm, batch, **eval_kw)
    # The no-prefix baseline: what S_D must beat (the LLM reads the query alone).
    b = batch["query_ids"].shape[0]
    none = jnp.zeros((b, 0, lm.config.d_model), jnp.float32)
    zs = losses.student_logits(lm.model, frozen_lm, none, batch["query_ids"],
                               batch["query_mask"])
    nll, w = losses.ce_per_token(zs, batch["query_ids"], batch["target_mask"])
    m["zero_shot_ce"] = losses.masked_mean(nll, w)
    return m

  def evaluate(params, frozen, step):
    del step
    keys = jax.random.split(jax.random.key(config.eval.seed), config.eval.num_batches)
    ms = [sharding.to_host(eval_batch(params, frozen["lm"], frozen["val"], k)) for k in keys]
    return {f"val_{k}": float(np.mean([m[k] for m in ms])) for k in ms[0]}

  def report(params, frozen, workdir, final):
    del params, frozen
    lines = [f"MEND stage {stage} ({config.task}) in {workdir}:"]
    lines += [f"  {k} = {v:.4f}" for k, v in sorted(final.items())
              if isinstance(v, float)]
    return "\n".join(lines)

  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(
      jax.eval_shape(lambda k: nn.unbox(init_params(k)), jax.random.key(0))))
  info = {"stage": stage, "distiller_params": n_params, "llm_d_model": lm.config.d_model,
          "llm_layers": lm.config.num_layers, "demo_slots": td,
          "num_vectors": config.distiller.num_vectors,
          **{k: v for k, v in data_info.items() if k != "root"}}
  return experiment_lib.Experiment(
      init_params=init_params, sample_batch=sample_batch, loss_fn=loss_fn, evaluate=evaluate,
      report=report, info=info, frozen=frozen,
      objects={"distiller": distiller, "lm": lm, "demo_slots": td, "buckets": shapes,
               "loss_at": loss_at,
               "train_distiller": train_distiller, "student_lm": student_lm,
               "teacher_lm": teacher_lm})


experiment_lib.EXPERIMENTS.register("mend_pretrain", defaults=defaults.pretrain_config)(build)
experiment_lib.EXPERIMENTS.register("mend_finetune", defaults=defaults.finetune_config)(build)

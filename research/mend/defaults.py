"""Every key of MEND's configs, declared once with its default and meaning.

  pretrain_config()   "mend_pretrain": stage 1, meta-distillation pretraining on text
  finetune_config()   "mend_finetune": stage 2, on a partition's meta-train tasks
  eval_config()       "mend_eval": the evaluation runner (zero-shot, ICL, prompt tuning
                      and trained distillers, `LABEL=RUN_DIR` in `methods`)

Configs in `experiments/mend/` start from these and change a few keys. A key's
default is the behaviour a run had before the key existed, so old workdirs resume
(`research.config.check_resume_compatible`).
"""
import ml_collections

from research import config as config_lib
from research.llm import defaults as llm_defaults
from research.llm.metaicl import defaults as metaicl_defaults

# What a distiller evaluation and prompt tuning need beside the distillers.
EVAL_METHODS = ("zero_shot", "icl", "prompt_tuning")


def distiller_section() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      # llm: the distiller LM is the frozen LLM's first `num_layers` blocks (same width,
      # no projection); random: a fresh Llama of d_model (Linear + tanh to the LLM width).
      init="llm",
      num_layers=4,
      d_model=576, num_heads=9, num_kv_heads=3, mlp_dim=1536,  # init=random only.
      num_vectors=16,               # l, the distilled vectors S_D.
      placeholder_init="vocab",     # vocab: random rows of the embedding table | normal.
      # S_D RMS-normalised with a learned gain starting at the LLM's embedding RMS
      # (models/distiller.py). False: runs before the fix; the configs set True.
      match_embedding_scale=False,
  ))


def _training(task: str) -> ml_collections.ConfigDict:
  """The trainer sections with the paper's optimizer: AdamW, grad-clip 1, linear decay,
  no warm-up; plus the LLM, the distiller and the loss."""
  c = config_lib.trainer_sections(ml_collections.ConfigDict())
  c.task = task
  c.init_from = ""                  # A trainer workdir whose newest distiller starts this run.
  c.model = llm_defaults.model_section()
  c.distiller = distiller_section()
  c.loss = ml_collections.ConfigDict(dict(
      ce_weight=1.0,                # CE of the gold output under the student.
      kl_weight=1.0,                # λ of KL(teacher ‖ student); 0 = HyperTuning-style.
      temperature=1.0,              # T of the KL (softmax(z/T) both sides, times T²); paper: 1.
  ))
  # GPT-2's dropout (embeddings, attention probabilities, residual branches) in the
  # training passes; off at evaluation. The released code trains GPT-2 in train mode:
  # 0.1 in all three passes. 0 = none (the runs before this section existed).
  c.dropout = ml_collections.ConfigDict(dict(
      distiller=0.0,                # In the distiller LM.
      student=0.0,                  # In the frozen LLM's student pass LLM([S_D ; x]).
      teacher=0.0,                  # In its teacher pass (0 when the teacher is cached).
  ))
  c.optimizer.update(name="adamw", learning_rate=1e-4, weight_decay=0.0, grad_clip=1.0)
  c.schedule.update(name="linear")
  c.train.update(num_steps=200, batch_size=4, log_every=10, eval_every=50, checkpoint_every=50,
                 keep_checkpoints=2, tensorboard=False, progress=False)
  c.eval = ml_collections.ConfigDict(dict(
      seed=1234,                    # Key of the fixed validation batches.
      num_batches=4,                # Validation batches per evaluation.
      batch_size=4,                 # Rows per validation batch.
  ))
  return c


def pretrain_config() -> ml_collections.ConfigDict:
  """Stage 1: plain text; the first 80 % of a window are the demonstrations, the last
  20 % the query; KL only."""
  c = _training("mend_pretrain")
  c.data = ml_collections.ConfigDict(dict(
      corpus="offline",             # offline (packaged text, research/mend/data.py) | c4 (TFDS).
      num_documents=0,              # > 0: only the first N documents.
      tfds_data_dir="",             # TFDS data_dir of c4/en ("" = the default).
      window=160,                   # Tokens per text window (long documents give several).
      min_tokens=40,                # Shorter windows are dropped.
  ))
  c.loss.update(ce_weight=0.0, kl_weight=1.0)
  c.optimizer.learning_rate = 2e-4
  return c


def finetune_config() -> ml_collections.ConfigDict:
  """Stage 2: K random demonstrations of the query's task; CE + λ·KL."""
  c = _training("mend_finetune")
  c.data = metaicl_defaults.data_section()
  c.data.update(dict(
      k=16,                         # Demonstrations per episode.
      max_row_tokens=64,            # Tokens of one " x y" row (x cut).
      max_length=512,               # Teacher length: demonstration slot + one row.
      val_rows=16,                  # Rows per meta-train task held out for validation.
      # "" = validate on those held-out rows; a partition name = validate on the *test*
      # tasks of that partition (held-out tasks; must be disjoint from the train tasks).
      val_partition="",
      # > 0: train on a fixed table of this many episodes (research/mend/episodes.py),
      # needed by the teacher cache and the buckets; 0 = fresh demonstrations every step.
      episodes=0,
      episode_seed=0,               # The table is a pure function of this seed (and the data).
      buckets=1,                    # Shape buckets of the table (> 1 needs episodes > 0).
  ))
  c.teacher = ml_collections.ConfigDict(dict(
      # none: the teacher pass runs in every step; topk / full: its outputs come from the
      # content-keyed cache (research/mend/teacher_cache.py; needs data.episodes > 0).
      cache="none",
      top_k=64,                     # Tokens kept per query slot by cache=topk.
      cache_dir="",                 # "" = <data.suite_dir or runs>/mend_teacher_cache.
  ))
  return c


def eval_config() -> ml_collections.ConfigDict:
  return metaicl_defaults.eval_config("mend_eval", EVAL_METHODS)

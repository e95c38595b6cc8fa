"""Prompt tuning: soft vectors trained on the meta-train tasks (a `prompt_tuning`
trainer run), then prefilled into the KV cache before each query.

`prompt_tuning` in `config.methods` trains the run in `<workdir>/prompt_tuning` with
`config.prompt_tuning` (resumable like any trainer run; a finished one is reused) and
reads it back with `research.runs.load`; `LABEL=RUN_DIR` evaluates an existing run.
The soft prompt belongs to the partition it was trained on. It does not depend on the
demonstration seed (scored once per task).
"""
import hashlib
import json
import os

import flax.linen as nn
import numpy as np

from research import runs
from research import train
from research.errors import ConfigError
from research.icl import prompt_tuning as pt
from research.llm import defaults as llm_defaults
from research.llm.metaicl import data as icl_data
from research.llm.metaicl import prompts
from research.llm.metaicl.methods import METHODS, Method


def sections():
  return {"prompt_tuning": pt.trainer_part()}


def train_run(ctx, workdir: str) -> str:
  """Trains (or resumes, or reuses) the prompt-tuning run of `ctx` in `workdir`."""
  c = pt.get_config()
  for name, section in ctx.settings.prompt_tuning.items():
    c[name] = section
  c.model = llm_defaults.section_of(ctx.lm)
  # The meta-train rows as a MetaICL directory of the run (named by their content, so
  # other rows in the same workdir are another run's data, never mixed into this one).
  digest = hashlib.sha256(json.dumps(ctx.meta_train, sort_keys=True).encode()).hexdigest()[:12]
  partition = ctx.partition or "meta_train"
  c.data.update(root=icl_data.write_meta_train(
      os.path.join(os.path.abspath(workdir), f"meta_train_{digest}"), partition, ctx.meta_train),
      partition=partition)
  train.train_and_evaluate(c.lock(), workdir)
  return workdir


@METHODS.register("prompt_tuning", needs=("meta_train",), seed_dependent=False, run="optional",
                  sections=sections)
class PromptTuning(Method):

  def __init__(self, ctx, run=None):
    super().__init__(ctx, run)
    if run is None:
      if not ctx.workdir:
        raise ConfigError("prompt tuning trains a run: evaluate(..., workdir=DIR)")
      run = train_run(ctx, os.path.join(ctx.workdir, "prompt_tuning"))
      self.run = None  # Trained here: reported as part of this evaluation.
    self.trained = runs.load(run)
    if self.trained.config.model.to_dict() != llm_defaults.section_of(ctx.lm).to_dict():
      raise ConfigError(f"{run} tuned a prompt for model {self.trained.config.model.to_dict()}, "
                        f"this evaluation uses {llm_defaults.section_of(ctx.lm).to_dict()}")
    self.soft = np.asarray(nn.unbox(self.trained.params)["soft"])
    self.trained_on = self.trained.config.data.partition

  def score(self, task, seed):
    del seed
    ctx = self.ctx
    rows, counts = prompts.query_rows(ctx.lm.tokenizer, task.queries, True, ctx.prompt)
    p = ctx.scorer.prefill(prefix_embeds=self.soft, rows_len=ctx.scorer.rows_len(rows))
    return (prompts.split_rows(ctx.scorer.score_with_prefix(p, rows), counts),
            {"prefix_tokens": self.soft.shape[0]})

  def finish(self, record):
    final = self.trained.final or {}
    record["training"] = {"workdir": self.trained.workdir, "step": self.trained.step,
                          "train_tasks": self.trained.experiment.objects["train_tasks"],
                          **{k: final[k] for k in ("val_loss", "first_loss", "last_loss")
                             if k in final}}

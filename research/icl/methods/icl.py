"""Vanilla ICL: the seed's K demonstrations, then the query; the demonstrations are
encoded once per (task, seed) into the KV cache and every option of every query is
scored against it (`cache_prefix = False`: the naive baseline, `icl_nocache.py`)."""
from research.llm.metaicl import prompts
from research.llm.metaicl.methods import METHODS, Method


@METHODS.register("icl", needs=("demonstrations",), seed_dependent=True, run="never")
class ICL(Method):
  cache_prefix = True

  def score(self, task, seed):
    ctx = self.ctx
    tok, scorer = ctx.lm.tokenizer, ctx.scorer
    rows, counts = prompts.query_rows(tok, task.queries, False, ctx.prompt)
    prefix, kept = prompts.build_prefix(tok, task.demonstrations(ctx.k, seed),
                                        prompts.prefix_budget(rows, ctx.prompt), ctx.prompt)
    info = {"demos_kept": kept, "prefix_tokens": len(prefix)}
    if not prefix:  # No demonstration fits: the query is the first example.
      rows, counts = prompts.query_rows(tok, task.queries, True, ctx.prompt)
      return prompts.split_rows(scorer.score_full(rows), counts), info
    if self.cache_prefix:
      nll = scorer.score_with_prefix(scorer.prefill(prefix, rows_len=scorer.rows_len(rows)), rows)
    else:
      nll = scorer.score_full([(prefix + c, o) for c, o in rows])
    return prompts.split_rows(nll, counts), info

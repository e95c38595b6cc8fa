"""Zero-shot: the query alone (it is the first example: no leading space)."""
from research.llm.metaicl import prompts
from research.llm.metaicl.methods import METHODS, Method


@METHODS.register("zero_shot", needs=(), seed_dependent=False, run="never")
class ZeroShot(Method):

  def score(self, task, seed):
    del seed
    rows, counts = prompts.query_rows(self.ctx.lm.tokenizer, task.queries, True, self.ctx.prompt)
    return prompts.split_rows(self.ctx.scorer.score_full(rows), counts), {}

"""MetaICL prompts (leading spaces, truncation, per-example cap), metrics, demonstration
sampling, aggregation over demonstration seeds and the tables (mean ± se, n)."""
import json
import os

import numpy as np
import pytest

from research import stats
from research.llm import tokenizer
from research.llm.metaicl import prompts as P
from research.llm.metaicl import results as R

RESULTS = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "mend", "results")


def ex(x, y, options=("yes", "no"), task="t"):
  return {"task": task, "input": x, "output": y, "options": list(options)}


def test_prompt_format_leading_spaces():
  tok = tokenizer.ByteTokenizer()
  cfg = P.PromptConfig()
  demos = [ex("a", "yes"), ex("b", "no")]
  prefix, kept = P.build_prefix(tok, demos, 1000, cfg)
  assert tok.decode(prefix) == "a yes b no" and kept == 2
  rows, counts = P.query_rows(tok, [ex("c", "no")], False, cfg)
  assert [tok.decode(c + o) for c, o in rows] == [" c yes", " c no"] and counts == [2]
  rows, _ = P.query_rows(tok, [ex("c", "no")], True, cfg)
  assert tok.decode(rows[0][0]) == "c"  # zero-shot: the query is the first example


def test_truncation_drops_demonstrations_not_query():
  tok = tokenizer.ByteTokenizer()
  demos = [ex(f"demo{i}", "yes") for i in range(6)]
  query = ex("a long query that must survive", "no")
  rows, _ = P.query_rows(tok, [query], False, P.PromptConfig())
  query_len = max(len(c) + len(o) for c, o in rows)
  cfg = P.PromptConfig(max_length=query_len + 3 * len(" demo0 yes"))
  prefix, kept = P.build_prefix(tok, demos, P.prefix_budget(rows, cfg), cfg)
  assert kept == 3
  # The earliest demonstrations go; the kept ones keep their " x y" encoding.
  assert tok.decode(prefix) == " demo3 yes demo4 yes demo5 yes"
  assert len(prefix) + query_len <= cfg.max_length
  assert P.build_prefix(tok, demos, 0, cfg) == ([], 0)


def test_per_example_cap_cuts_input_keeps_output():
  tok = tokenizer.ByteTokenizer()
  ids = P.encode_demonstration(tok, ex("x" * 500, "yes"), True,
                               P.PromptConfig(max_length_per_example=20))
  assert len(ids) == 18 and tok.decode(ids).endswith(" yes")


@pytest.mark.parametrize("preds,golds,want", [
    # Confusion [[2,1,0],[0,1,1],[0,0,1]]: F1 a = 0.8, b = 0.5, c = 2/3.
    (list("aabbcc"), list("aaabbc"), (0.8 + 0.5 + 2 / 3) / 3),
    (list("abab"), list("abab"), 1.0),
    # Class b never predicted: F1_b = 0 (MetaICL counts its precision as 1).
    (list("aaaa"), list("aabb"), (2 * 0.5 * 1.0 / 1.5 + 0.0) / 2),
])
def test_macro_f1_known_confusions(preds, golds, want):
  assert R.macro_f1(preds, golds) == pytest.approx(want)


def test_macro_f1_matches_sklearn_when_every_class_is_predicted():
  from sklearn.metrics import f1_score
  rng = np.random.default_rng(0)
  golds = rng.choice(list("abc"), 50).tolist()
  preds = rng.choice(list("abc"), 50).tolist()
  assert R.macro_f1(preds, golds) == pytest.approx(f1_score(golds, preds, average="macro"))
  assert R.accuracy(preds, golds) == pytest.approx(np.mean(np.array(preds) == golds))


def test_sampling_deterministic_per_seed():
  pool = [ex(str(i), "yes") for i in range(40)]
  a = P.sample_demonstrations(pool, 16, 13)
  assert a == P.sample_demonstrations(pool, 16, 13)
  assert a != P.sample_demonstrations(pool, 16, 21)
  assert len({d["input"] for d in a}) == 16
  with pytest.raises(ValueError):
    P.sample_demonstrations(pool, 41, 13)


def test_aggregate_seeds_then_tasks_with_standard_error():
  agg = R.aggregate({"t1": {13: 0.5, 21: 1.0}, "t2": {13: 0.0, 21: 0.2}})
  assert agg["per_task"] == {"t1": 0.75, "t2": pytest.approx(0.1)}
  assert agg["mean"] == pytest.approx(0.425)
  # Per-seed means over tasks 0.25 and 0.6: se = std(ddof=1) / sqrt(2), n = 2 seeds.
  assert (agg["se"], agg["n"]) == (pytest.approx(stats.mean_se([0.25, 0.6])[1]), 2)
  once = R.aggregate({"t1": {13: 0.5}, "t2": {13: 0.1}}, seed_dependent=False)
  assert once["n"] == 1 and np.isnan(once["se"])


def test_tables_print_mean_se_and_n():
  res = {"methods": {"icl": R.aggregate({"t": {13: 0.5, 21: 0.7}}),
                     "zero_shot": R.aggregate({"t": {13: 0.4}}, seed_dependent=False)}}
  for r in res["methods"].values():
    r["efficiency"] = {"flops_per_query": 1e9, "seconds_per_query": 0.01}
  table = R.results_table(res)
  assert "| t | 60.0 ± 10.0 | 40.0 |" in table
  assert "| n (demonstration seeds) | 2 | 1 |" in table


def test_committed_results_recompute_with_standard_errors():
  """The committed 5-seed MEND results: a seed-independent method (written before the
  flag existed, its value under every seed) has n = 1; ICL's spread is over 5 seeds."""
  with open(os.path.join(RESULTS, "smollm2_class_to_class_8tasks_k16_5seeds.json")) as f:
    res = json.load(f)
  icl, zs = res["methods"]["icl"], res["methods"]["zero_shot"]
  mean, se, n = R.method_spread(icl)
  assert (round(100 * mean, 1), n) == (42.9, 5) and 0 < se < 0.05
  assert R.method_spread(zs)[2] == 1 and round(100 * R.method_spread(zs)[0], 1) == 34.6
  table = R.results_table(res)
  assert "**42.9 ± " in table and "**34.6**" in table

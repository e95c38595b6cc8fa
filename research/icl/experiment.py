"""`config.task == "icl_eval"`: a frozen LLM on MetaICL-format tasks, every method of
`config.methods` (`research/llm/metaicl/methods.py`; ICL's own in `research/icl/methods/`).

  python -m launch.main --config experiments/icl/smollm2_offline.py --workdir DIR

Steps (`research.llm.metaicl.evaluation.run_directory`): (1) the task directory
(`config.data.root`, or the offline suite generated under the workdir); (2) the LLM
and its tokenizer (`config.model`); (3) every method on the meta-test tasks of
`config.data.partition`, for every demonstration seed (prompt tuning trains its run
in `<workdir>/prompt_tuning` first); (4) `<workdir>/icl_results.{json,md}` (mean ±
standard error over demonstration seeds, n = seeds) and rows in `metrics.jsonl`.
"""
from __future__ import annotations

from typing import Any

from research import experiment as experiment_lib
from research.icl import defaults
from research.llm.metaicl import evaluation


def icl_gain(results: dict, ctx, tasks) -> str:
  """ICL minus zero-shot per task, when both ran (kept in the results file)."""
  del ctx
  m = results["methods"]
  if "zero_shot" in m and "icl" in m:
    results["icl_gain"] = {t.name: m["icl"]["per_task"][t.name] - m["zero_shot"]["per_task"][t.name]
                           for t in tasks}
  return ""


@experiment_lib.EXPERIMENTS.register("icl_eval", defaults=defaults.get_config, runner=True,
                                     validate=evaluation.check)
def run(config, workdir: str) -> dict[str, Any]:
  return evaluation.run_directory(config, workdir, "icl_results", extra=icl_gain)

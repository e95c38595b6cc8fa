"""Every key of an `icl_eval` config, declared once (the shared evaluation sections of
`research/llm/metaicl/defaults.py`, with every registered method's own section);
`experiments/icl/*.py` start from `get_config()`."""
import ml_collections

from research.llm.metaicl import defaults as metaicl_defaults

METHODS = ("zero_shot", "icl", "icl_nocache", "icl_retrieved", "prompt_tuning")


def get_config() -> ml_collections.ConfigDict:
  """SmolLM2 frozen, the class_to_class meta-test tasks of the offline suite, K = 16,
  5 demonstration seeds, every ICL method."""
  return metaicl_defaults.eval_config("icl_eval", METHODS)

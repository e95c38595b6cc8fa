"""The sections every MetaICL-format evaluation config has (`icl_eval`, `mend_eval`),
declared once with their defaults; a task's defaults start from `eval_config`."""
import ml_collections

from research.llm import defaults as llm_defaults
from research.llm.metaicl import data as icl_data
from research.llm.metaicl import methods


def data_section(partition: str = "class_to_class") -> ml_collections.ConfigDict:
  """Where the tasks come from (a MetaICL directory or the generated offline suite)."""
  return ml_collections.ConfigDict(dict(
      root="",                      # A MetaICL directory; "" = the offline suite, generated.
      suite_dir="",                 # Where the suite is generated ("" = the workdir; runs/ for
                                    # training tasks, which have no workdir when they build).
      suite_seed=0,                 # The suite is a pure function of this seed and the sizes.
      n_test=64,                    # Test rows per task (written, and evaluated).
      max_train=512,                # Meta-train rows per task (written).
      # > 0: the suite plus this many generated classification tasks and the gen{n}_to_class /
      # gen{n}_to_val partitions (research/llm/metaicl/generator.py); 0 = the suite alone.
      generated_tasks=0,
      partition=partition,          # Its meta-test tasks are evaluated, meta-train ones trained on.
  ))


def eval_config(task: str, methods_: tuple[str, ...]) -> ml_collections.ConfigDict:
  """An evaluation runner's defaults: its `methods`, the LLM, the tasks, prompts,
  scoring, and every registered method's settings."""
  c = ml_collections.ConfigDict()
  c.task = task
  c.tensorboard = False             # Also write TensorBoard next to metrics.jsonl.
  # Names of registered methods, or LABEL=RUN_DIR for trained runs (metaicl/methods.py).
  c.methods = methods_
  c.model = llm_defaults.model_section()
  c.data = data_section()
  c.data.update(dict(
      tasks="",                     # Comma-separated meta-test tasks ("" = the partition's).
      k=16,                         # Demonstrations per prompt.
      seeds=icl_data.SEEDS,         # Demonstration seeds (MetaICL's k-shot files).
  ))
  c.prompt = ml_collections.ConfigDict(dict(
      max_length=1024,              # Prompt tokens (MetaICL's, for GPT-2); demos dropped beyond.
      max_length_per_example=256,   # Tokens per example (its input is cut).
      bos=False,                    # Prepend the tokenizer's BOS.
  ))
  c.scorer = ml_collections.ConfigDict(dict(batch_rows=8))  # (query, option) rows per call.
  for name, section in methods.sections().items():
    c[name] = section
  return c

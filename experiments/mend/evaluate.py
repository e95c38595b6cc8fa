r"""MEND evaluation: zero-shot, vanilla ICL (prefix KV-cached), prompt tuning and every
trained distiller (MEND, MEND without stage 1, the HyperTuning-style CE-only
distiller) on the meta-test tasks of a partition, plus the efficiency table (LLM
FLOPs and wall time per query, S_D reused per task vs computed per query,
compression of the demonstrations into l vectors).

Command (after the training runs of experiments/mend/README.md):
  python -m launch.main --config experiments/mend/evaluate.py --workdir runs/mend_eval \
      --config.mend.runs="mend=runs/mend_ft,mend_no_stage1=runs/mend_ns1,hypertuning=runs/mend_ht"
Variants:
  :tiny                 tiny random LLM, 3 tasks, 2 seeds (tests; needs tiny runs)
  :partition=NAME       the partition (its meta-test tasks; the runs must be trained on it)
Measured: see experiments/mend/README.md (filled from real runs only).
"""
import ml_collections

from experiments import common
from experiments.mend import base


def get_config(arg=None):
  a = common.parse_arg(arg, tiny=False, partition="class_to_class", seed=0)
  c = ml_collections.ConfigDict()
  c.task = "mend_eval"
  c.seed = a.seed
  c.tensorboard = False
  c.methods = ("zero_shot", "icl", "prompt_tuning")
  c.model = base.llm_section(a.tiny)
  # Same suite as experiments/mend/finetune.py (root "" = generated into suite_dir).
  c.data = ml_collections.ConfigDict(dict(
      root="", suite_dir="", suite_seed=0, partition=a.partition, tasks="", k=16,
      seeds=(13, 21, 42, 87, 100), n_test=64, max_train=512))
  c.prompt = dict(max_length=1024, max_length_per_example=256, bos=False)
  c.scorer = dict(batch_rows=8)
  c.retrieval = dict(pool_size=128, embed="hashed_bow")  # Only for icl_retrieved.
  c.prompt_tuning = dict(num_vectors=16, steps=300, batch_size=8, learning_rate=3e-3,
                         init="vocab", max_row_tokens=96, max_rows_per_task=512)
  c.mend = dict(runs="")  # "name=workdir,..." of stage-2 runs on this partition.
  if a.tiny:
    c.data.update(tasks="iris_species,number_parity", k=4, seeds=(13, 21), n_test=16,
                  max_train=64)
    c.prompt.max_length = 512
    c.prompt_tuning.update(steps=3, num_vectors=4, max_row_tokens=64)
  return c.lock()

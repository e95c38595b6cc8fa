r"""MEND evaluation: zero-shot, vanilla ICL (prefix KV-cached), prompt tuning and every
trained distiller (MEND, MEND without stage 1, the HyperTuning-style CE-only
distiller) on the meta-test tasks of a partition, plus the efficiency table (LLM
FLOPs and wall time per query, S_D reused per task vs computed per query,
compression of the demonstrations into l vectors).

Command (after the training runs of experiments/mend/README.md):
  python -m launch.main --config experiments/mend/evaluate.py --workdir runs/mend_eval \
      --config.methods="('zero_shot','icl','prompt_tuning','mend=runs/mend_ft',\
'mend_no_stage1=runs/mend_ns1','hypertuning=runs/mend_ht')"

Each LABEL=RUN_DIR entry is a trained distiller (a `mend_finetune` run), evaluated by the
method registered for its task and reported as LABEL.
Variants:
  :tiny                 tiny random LLM, 3 tasks, 2 seeds (tests; needs tiny runs)
  :partition=NAME       the partition (its meta-test tasks; the runs must be trained on it)
Measured: see experiments/mend/README.md (filled from real runs only).
"""
from experiments import common
from research.mend import defaults


def get_config(arg=None):
  a = common.parse_arg(arg, tiny=False, partition="class_to_class", seed=0)
  c = defaults.eval_config()
  c.data.partition = a.partition
  c.prompt_tuning.seed = a.seed
  c.retrieval.embed = "hashed_bow"  # Only for icl_retrieved.
  if a.tiny:
    c.model.source = "tiny"
    c.data.update(tasks="iris_species,number_parity", k=4, seeds=(13, 21), n_test=16,
                  max_train=64)
    c.prompt.max_length = 512
    c.prompt_tuning.train.update(num_steps=3, log_every=1, eval_every=3, checkpoint_every=3)
    c.prompt_tuning.prompt.update(num_vectors=4, max_row_tokens=64)
  return c.lock()

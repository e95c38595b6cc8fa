"""Prompt tuning on its own: 16 soft vectors trained on the meta-train tasks of a
partition (SmolLM2 frozen), a trainer run that `icl_eval` / `mend_eval` evaluate with
`--config.methods="('pt=RUN_DIR',)"` (or train themselves with "prompt_tuning").

Command:
  python -m launch.main --config experiments/icl/prompt_tuning.py --workdir runs/pt
Variants:
  :tiny              tiny random LLM, a few steps (tests)
  :partition=NAME    the meta-train tasks of another partition
Measured: prompt tuning inside the MEND evaluation (experiments/mend/README.md):
300 steps, loss 11.56 -> 1.76, class_to_class meta-test 29.6 (n = 1).
"""
from experiments import common
from research.icl import prompt_tuning


def get_config(arg=None):
  a = common.parse_arg(arg, tiny=False, partition="class_to_class", seed=0)
  c = prompt_tuning.get_config()
  c.seed = a.seed
  c.data.partition = a.partition
  if a.tiny:
    c.model.source = "tiny"
    c.data.update(n_test=16, max_train=64)
    c.prompt.update(num_vectors=4, max_row_tokens=64)
    common.tiny_train(c, num_steps=4, batch_size=8)
  return c.lock()

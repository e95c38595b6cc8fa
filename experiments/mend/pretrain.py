r"""MEND stage 1: meta-distillation pretraining on plain text (KL only).

The first 80 % of each text window (≤ `data.window` tokens) is given to the
distiller as the demonstrations, the last 20 % is the query; the student
LLM([S_D ; query]) is pulled toward the teacher LLM(demonstrations ⊕ query) by
KL(teacher ‖ student) over the query tokens. Corpus: the offline packaged text of
research/mend/data.py (`data.corpus=offline`) or TFDS c4/en (`data.corpus=c4`).

Command:
  python -m launch.main --config experiments/mend/pretrain.py --workdir runs/mend_pretrain
Variants:
  :tiny            tiny random LLM + distiller, a few steps (tests)
  :steps=N         number of steps
  :distiller=random  a fresh small Llama distiller instead of the LLM's first 4 layers
  --config.init_from=DIR  start from the distiller of an earlier stage-1 run (its newest
                   checkpoint; new optimizer state and schedule): stage 1 continued
Measured: see experiments/mend/README.md (filled from real runs only).
"""
import ml_collections

from experiments import common
from experiments.mend import base


def get_config(arg=None):
  a = common.parse_arg(arg, tiny=False, steps=0, distiller="llm", seed=0)
  c = ml_collections.ConfigDict()
  c.task = "mend_pretrain"
  c.seed = a.seed
  c.model = base.llm_section(a.tiny)
  c.distiller = base.distiller_section(a.tiny, a.distiller)
  c.init_from = ""  # A stage-1 workdir to continue from; "" = the distiller's own init.
  c.data = ml_collections.ConfigDict(dict(
      corpus="offline", num_documents=0, tfds_data_dir="", window=160, min_tokens=40))
  c.loss = ml_collections.ConfigDict(dict(ce_weight=0.0, kl_weight=1.0))
  # lr 5e-5 in the paper (30k steps, GPT-2 small); a few hundred CPU steps need more.
  base.trainer_sections(c, lr=2e-4, steps=a.steps or 200, batch_size=4, tiny=a.tiny)
  if a.tiny:
    c.data.update(num_documents=40, window=48, min_tokens=16)
    c.train.update(num_steps=a.steps or 4, batch_size=8)
    c.eval.batch_size = 8
  return c.lock()

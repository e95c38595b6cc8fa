r"""MEND stage 2: meta-distillation fine-tuning on a partition's meta-train tasks.

Each query gets K = 16 random demonstrations of its own task; loss CE(gold output |
S_D, x) + λ·KL(teacher ‖ student). `init_from` names a stage-1 workdir (its newest
checkpoint is restored); "" trains MEND without stage 1. `:kl=0` is the
HyperTuning-style ablation (a distiller trained with CE only). Validation uses rows
held out from the meta-train tasks; the meta-test tasks are never read.

Commands:
  python -m launch.main --config experiments/mend/finetune.py \
      --workdir runs/mend_ft --config.init_from=runs/mend_pretrain
  python -m launch.main --config experiments/mend/finetune.py:kl=0 --workdir runs/hypertuning
  python -m launch.main --config experiments/mend/finetune.py --workdir runs/mend_no_stage1
Variants:
  :tiny  :steps=N  :kl=λ  :partition=NAME  :distiller=random
Measured: see experiments/mend/README.md (filled from real runs only).
"""
import ml_collections

from experiments import common
from experiments.mend import base


def get_config(arg=None):
  a = common.parse_arg(arg, tiny=False, steps=0, kl=1.0, partition="class_to_class",
                       distiller="llm", seed=0)
  c = ml_collections.ConfigDict()
  c.task = "mend_finetune"
  c.seed = a.seed
  c.init_from = ""  # A stage-1 workdir; "" = MEND without stage 1.
  c.model = base.llm_section(a.tiny)
  c.distiller = base.distiller_section(a.tiny, a.distiller)
  # root "" = the offline suite, generated once into suite_dir (default runs/).
  c.data = ml_collections.ConfigDict(dict(
      root="", suite_dir="", suite_seed=0, n_test=64, max_train=512, partition=a.partition,
      k=16, max_row_tokens=64, max_length=512, val_rows=16))
  c.loss = ml_collections.ConfigDict(dict(ce_weight=1.0, kl_weight=float(a.kl)))
  # lr 1e-5 in the paper (30k steps); short CPU runs need more.
  base.trainer_sections(c, lr=1e-4, steps=a.steps or 200, batch_size=4, tiny=a.tiny)
  if a.tiny:
    c.data.update(k=4, max_row_tokens=48, max_length=160, max_train=64, n_test=16, val_rows=4)
    c.train.update(num_steps=a.steps or 4, batch_size=8)
    c.eval.batch_size = 8
  return c.lock()

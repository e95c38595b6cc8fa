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
from experiments import common
from experiments.mend import pretrain
from research.mend import defaults


def get_config(arg=None):
  a = common.parse_arg(arg, tiny=False, steps=0, kl=1.0, partition="class_to_class",
                       distiller="llm", seed=0)
  c = defaults.finetune_config()
  c.seed = a.seed
  c.distiller.update(init=a.distiller, match_embedding_scale=True)
  c.data.partition = a.partition
  c.loss.kl_weight = float(a.kl)
  # lr 1e-5 in the paper (30k steps); short CPU runs need more.
  c.optimizer.learning_rate = 1e-4
  steps = a.steps or 200
  c.train.update(num_steps=steps, eval_every=max(steps // 4, 1),
                 checkpoint_every=max(steps // 4, 1))
  if a.tiny:
    pretrain.tiny(c)
    c.data.update(k=4, max_row_tokens=48, max_length=160, max_train=64, n_test=16, val_rows=4)
    c.train.num_steps = a.steps or 4
  return c.lock()

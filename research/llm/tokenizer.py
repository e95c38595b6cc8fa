"""Tokenizers for the imported LMs, built on HF `tokenizers` (Rust, no torch).

Every tokenizer has `encode(text) -> ids` (no special tokens added), `decode(ids)`,
`vocab_size` and `bos_id` / `eos_id` (None when absent).

* `ByteTokenizer`: UTF-8 bytes as ids (vocab 256), the tokenizer of the tiny test LM.
* `load_tokenizer_json(path)`: an HF `tokenizer.json` as shipped with checkpoints.
* `tokenizer_from_gguf(path)`: the byte-level BPE carried inside a GGUF file
  (`tokenizer.ggml.model == "gpt2"`): vocabulary, merges and control tokens are
  rebuilt into a `tokenizers.Tokenizer`, with the pre-tokenizer named by
  `tokenizer.ggml.pre` (llama.cpp's names; "smollm" splits every digit, then
  applies the GPT-2 regex, like SmolLM's own tokenizer.json).
"""
import dataclasses
import json
import os
import warnings

import tokenizers
from tokenizers import decoders, models, pre_tokenizers

from research.llm import weights

# GGUF token types (llama.cpp's llama_token_type): 3 = control, 4 = user-defined.
_CONTROL, _USER_DEFINED = 3, 4
# llama.cpp pre-tokenizer names whose regex is "each digit alone, then GPT-2's".
_DIGITS_THEN_GPT2 = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone",
                     "minerva"}
_GPT2 = {"gpt2", "default", "mpt", "olmo", "jais"}


class ByteTokenizer:
  """UTF-8 bytes as token ids (vocab 256): the tokenizer of the tiny test LM."""
  vocab_size = 256
  bos_id = None
  eos_id = None
  pad_id = None

  def encode(self, text: str) -> list[int]:
    return list(text.encode("utf-8"))

  def decode(self, ids, skip_special_tokens: bool = True) -> str:
    del skip_special_tokens
    return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


@dataclasses.dataclass
class TextTokenizer:
  """A `tokenizers.Tokenizer` plus the special ids the harness needs."""
  hf: tokenizers.Tokenizer
  bos_id: int | None = None
  eos_id: int | None = None
  pad_id: int | None = None

  @property
  def vocab_size(self) -> int:
    return self.hf.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, no BOS/EOS added (prompts are built by the caller)."""
    return self.hf.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

  def decode(self, ids, skip_special_tokens: bool = True) -> str:
    return self.hf.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

  def token_to_id(self, token: str) -> int | None:
    return self.hf.token_to_id(token)


def load_tokenizer_json(path: str, bos: str | None = None, eos: str | None = None,
                        pad: str | None = None) -> TextTokenizer:
  """HF tokenizer.json (file or checkpoint directory); special tokens by name or
  from a neighbouring tokenizer_config.json."""
  folder = path if os.path.isdir(path) else os.path.dirname(path)
  file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
  try:
    hf = tokenizers.Tokenizer.from_file(file)
  except Exception as e:
    raise weights.WeightImportError(f"{file}: not a readable tokenizer.json ({e})") from e
  cfg_path = os.path.join(folder, "tokenizer_config.json")
  cfg = {}
  if os.path.exists(cfg_path):
    with open(cfg_path) as f:
      cfg = json.load(f)

  def token_id(name, given):
    tok = given or cfg.get(name)
    if isinstance(tok, dict):
      tok = tok.get("content")
    return hf.token_to_id(tok) if tok else None

  return TextTokenizer(hf, bos_id=token_id("bos_token", bos), eos_id=token_id("eos_token", eos),
                       pad_id=token_id("pad_token", pad))


def _pre_tokenizer(pre: str):
  byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  if pre in _DIGITS_THEN_GPT2:
    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
  if pre not in _GPT2:
    warnings.warn(f"GGUF pre-tokenizer {pre!r} not mapped; using GPT-2's regex")
  return byte_level


def tokenizer_from_gguf(path: str) -> TextTokenizer:
  """The BPE tokenizer stored in a GGUF file's `tokenizer.ggml.*` metadata."""
  reader = weights.open_gguf(path)
  field = lambda k, d=None: weights.gguf_field(reader, f"tokenizer.ggml.{k}", d)
  kind = field("model")
  if kind != "gpt2":
    raise weights.WeightImportError(
        f"{path}: tokenizer.ggml.model={kind!r}; only byte-level BPE ('gpt2') is supported")
  tokens = field("tokens")
  merges = field("merges")
  if not tokens or merges is None:
    raise weights.WeightImportError(f"{path}: tokenizer.ggml.tokens/merges missing")
  types = field("token_type") or [1] * len(tokens)
  vocab = {tok: i for i, tok in enumerate(tokens)}
  merge_pairs = [tuple(m.split(" ", 1)) for m in merges]
  bpe = models.BPE(vocab=vocab, merges=merge_pairs, fuse_unk=False, byte_fallback=False)
  hf = tokenizers.Tokenizer(bpe)
  hf.pre_tokenizer = _pre_tokenizer(field("pre", "gpt2"))
  hf.decoder = decoders.ByteLevel()
  # Control tokens (<|im_start|>, <|endoftext|>, ...) must match whole, never split.
  special = [tokenizers.AddedToken(tok, special=True, normalized=False)
             for tok, ty in zip(tokens, types) if ty == _CONTROL]
  user = [tokenizers.AddedToken(tok, special=False, normalized=False)
          for tok, ty in zip(tokens, types) if ty == _USER_DEFINED]
  hf.add_special_tokens(special)
  if user:
    hf.add_tokens(user)
  as_id = lambda k: None if field(k) is None else int(field(k))
  return TextTokenizer(hf, bos_id=as_id("bos_token_id"), eos_id=as_id("eos_token_id"),
                       pad_id=as_id("padding_token_id"))

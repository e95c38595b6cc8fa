"""Helpers for the LLM tests: paths of the HF parity fixtures, a GGUF writer."""
import os

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file

from research.llm import weights

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "llm")

_HF_TO_GGUF = {
    "model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
_LAYER = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def fixture_dir(name):
  return os.path.join(FIXTURES, name)


def write_llama_gguf(path, hf_dir, qtype=gguf.GGMLQuantizationType.F32, tokenizer=None):
  """Convert the tiny HF Llama fixture to GGUF the way llama.cpp does (Q/K permuted).

  Matrices whose rows split into 32-element blocks get `qtype`; the rest F32.
  `tokenizer`: optional (tokens, merges, token_types, pre) to embed.
  """
  import json
  with open(os.path.join(hf_dir, "config.json")) as f:
    hf = json.load(f)
  tensors = load_file(os.path.join(hf_dir, "model.safetensors"))
  w = gguf.GGUFWriter(path, "llama")
  w.add_block_count(hf["num_hidden_layers"])
  w.add_context_length(hf["max_position_embeddings"])
  w.add_embedding_length(hf["hidden_size"])
  w.add_feed_forward_length(hf["intermediate_size"])
  w.add_head_count(hf["num_attention_heads"])
  w.add_head_count_kv(hf["num_key_value_heads"])
  w.add_key_length(hf["head_dim"])
  w.add_value_length(hf["head_dim"])
  w.add_layer_norm_rms_eps(hf["rms_norm_eps"])
  w.add_rope_freq_base(hf["rope_theta"])
  w.add_vocab_size(hf["vocab_size"])
  if tokenizer is not None:
    tokens, merges, types, pre = tokenizer
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
  for name, value in sorted(tensors.items()):
    if name in _HF_TO_GGUF:
      gname = _HF_TO_GGUF[name]
    else:
      _, _, i, *rest = name.split(".")
      gname = f"blk.{i}.{_LAYER['.'.join(rest[:-1])]}.weight"
    value = value.astype(np.float32)
    if gname.endswith("attn_q.weight"):
      value = weights.permute_rope_for_gguf(value, hf["num_attention_heads"])
    elif gname.endswith("attn_k.weight"):
      value = weights.permute_rope_for_gguf(value, hf["num_key_value_heads"])
    if value.ndim == 2 and value.shape[1] % 32 == 0 and qtype != gguf.GGMLQuantizationType.F32:
      w.add_tensor(gname, gguf.quants.quantize(value, qtype), raw_dtype=qtype)
    else:
      w.add_tensor(gname, value)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return path


@pytest.fixture
def gguf_from_hf():
  """write_llama_gguf(path, hf_dir, qtype=F32, tokenizer=None) -> path."""
  return write_llama_gguf


@pytest.fixture
def tiny_llama_gguf(tmp_path):
  return lambda qtype=gguf.GGMLQuantizationType.F32, tokenizer=None: write_llama_gguf(
      str(tmp_path / f"tiny_{qtype.name}.gguf"), fixture_dir("llama"), qtype, tokenizer)

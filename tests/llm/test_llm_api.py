"""The one-line LLM API on the tiny model: load (cached), logprobs, score_options,
generate (greedy / sampled, EOS), one argument order (the LM first)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.llm import CausalLM, token_logprobs
from research import llm
from research.errors import ConfigError


@pytest.fixture(scope="module")
def lm():
  return llm.load("tiny")


def test_load_tiny_is_cached_and_complete(lm):
  assert llm.load("tiny") is lm
  assert llm.load("tiny", seed=1) is not lm
  assert lm.model.config == lm.config and lm.tokenizer.encode("ab") == [97, 98]
  assert set(lm.params) == {"params"}
  with pytest.raises(ConfigError, match="no LLM"):
    llm.load("/no/such/model.gguf")


def test_logprobs_per_token(lm):
  text = "hello world"
  ids = jnp.asarray([lm.encode(text)])
  logits = lm.model.apply(lm.params, ids)
  want = np.asarray(token_logprobs(logits[:, :-1], ids[:, 1:])[0])
  got = llm.logprobs(lm, text)
  assert got.shape == (len(text) - 1,)
  np.testing.assert_allclose(got, want, atol=1e-5)
  np.testing.assert_array_equal(llm.logprobs(lm, lm.encode(text)), got)
  assert llm.logprobs(lm, "a").shape == (0,)


def test_score_options_is_the_sum_or_mean_of_logprobs(lm):
  prompt, options = "The capital of Italy is", [" Rome", " Paris", " X"]
  n = len(lm.encode(prompt))
  want = np.array([llm.logprobs(lm, prompt + o)[n - 1:].sum() for o in options])
  np.testing.assert_allclose(llm.score_options(lm, prompt, options, reduce="sum"), want,
                             atol=1e-4)
  lengths = np.array([len(o) for o in options])
  np.testing.assert_allclose(llm.score_options(lm, prompt, options), want / lengths, atol=1e-4)
  with pytest.raises(ValueError, match="non-empty"):
    llm.score_options(lm, prompt, ["", " a"])


def test_generate_text_ids_and_batches(lm):
  text = llm.generate(lm, "abc", max_new_tokens=5)
  ids = llm.generate(lm, lm.encode("abc"), max_new_tokens=5)
  assert isinstance(text, str) and text == lm.decode(ids)
  # Greedy = the argmax of the full forward, token by token.
  seq = lm.encode("abc")
  for _ in range(5):
    seq.append(int(jnp.argmax(lm.model.apply(lm.params, jnp.asarray([seq]))[0, -1])))
  assert ids.tolist() == seq[3:]
  # A batch of texts (left-padded inside) equals the texts one by one.
  assert llm.generate(lm, ["abc", "hello there"], 4) == [
      llm.generate(lm, "abc", 4), llm.generate(lm, "hello there", 4)]
  sampled = llm.generate(lm, "abc", 6, temperature=0.7, key=jax.random.key(0))
  assert sampled == llm.generate(lm, "abc", 6, temperature=0.7, key=jax.random.key(0))

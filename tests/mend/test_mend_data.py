"""MEND's data: packing/truncation on device equals the host rule, episodes, corpus."""
import jax
import jax.numpy as jnp
import numpy as np

from research.llm import tokenizer
from research.mend import data as mend_data


def test_pack_on_device_matches_host_and_drops_from_the_left():
  rng = np.random.default_rng(0)
  pack = jax.jit(mend_data.pack_on_device, static_argnums=2)
  for _ in range(20):
    k, e, td = 5, 8, int(rng.integers(6, 30))
    lens = rng.integers(0, e + 1, k)
    rows = rng.integers(1, 99, (k, e))
    enc = [list(rows[i, :lens[i]]) for i in range(k)]
    want, kept = mend_data.pack_demonstrations(enc, td)
    ids, mask = pack(jnp.asarray(rows), jnp.asarray(lens), td)
    n = int(mask.sum())
    assert n == len(want) <= td
    np.testing.assert_array_equal(np.asarray(ids)[:n], want)
    assert not np.asarray(mask)[n:].any()
    # The kept demonstrations are the last ones (the earliest are dropped).
    assert want == sum(enc[k - kept:], [])


def test_episode_demos_from_the_query_task_never_the_query():
  tok = tokenizer.ByteTokenizer()
  rows = {"a": [{"input": f"a{i}", "output": "x"} for i in range(7)],
          "b": [{"input": f"b{i}", "output": "yy"} for i in range(3)]}
  pool = mend_data.encode_task_pool(tok, rows, 12)
  dev = {k: jnp.asarray(v) for k, v in pool.items()}
  dev["max_count"] = int(pool["count"].max())
  batch = jax.jit(lambda key: mend_data.sample_episodes(key, dev, 64, 4, 40))(jax.random.key(0))
  text = lambda ids, mask: bytes(int(t) for t, m in zip(ids, mask) if m).decode()
  for i in range(64):
    q = text(batch["query_ids"][i], batch["query_mask"][i])
    d = text(batch["demo_ids"][i], batch["demo_mask"][i])
    task = q[1]
    inputs = d.split(" ")[1::2]
    assert all(s[0] == task for s in inputs), (q, d)
    assert q.split(" ")[1] not in inputs
    assert len(inputs) == len(set(inputs)) == (4 if task == "a" else 2)  # b has 2 others.
    y = text(batch["query_ids"][i], batch["target_mask"][i])
    assert y == (" x" if task == "a" else " yy")


def test_documents_split_80_20():
  tok = tokenizer.ByteTokenizer()
  out = mend_data.encode_documents(tok, ["a" * 50, "b" * 25, "c" * 5], window=40, min_tokens=10)
  assert out["demo_ids"].shape == (3, 32)  # 40, 10 (from the first) and 25 tokens.
  np.testing.assert_array_equal(out["demo_mask"].sum(1), [32, 8, 20])
  np.testing.assert_array_equal(out["query_mask"].sum(1), [8, 2, 5])


def test_offline_corpus_is_deterministic_text():
  a, b = mend_data.offline_corpus(), mend_data.offline_corpus()
  assert a == b and len(a) > 100
  assert sum(len(x) for x in a) > 500_000
  held = [x for x in a if mend_data.is_held_out(x)]
  assert 0 < len(held) < len(a) / 4

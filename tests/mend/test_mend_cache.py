"""Stage 2's episode table, shape buckets and teacher cache change the speed, not the
objective: the same batch gives the same loss with and without the cache and at its
bucket's shape; cache entries are keyed by content and checksummed; a run stopped and
resumed any number of times is bit-identical to an uninterrupted one."""
import glob
import os
import signal
import threading
import time

import flax.linen as nn
import jax
import numpy as np
import pytest

from experiments.mend import finetune
from research import checkpoint
from research import metrics as metrics_lib
from research import sharding
from research import train
from research.mend import episodes
from research.mend import teacher_cache


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("mend_cache"))


def _cfg(suite_dir, **kw):
  c = finetune.get_config("tiny")
  with c.unlocked():
    c.data.suite_dir = suite_dir
    c.data.update(episodes=48, buckets=3)
    c.teacher.cache = "none"  # The live teacher unless a test asks for a cache.
    for k, v in kw.items():
      node = c
      *path, last = k.split(".")
      for p in path:
        node = node[p]
      node[last] = v
  return c.lock()


def _built(cfg):
  exp = train.build_experiment(cfg, sharding.make_mesh(cfg.mesh))
  params = nn.unbox(jax.jit(exp.init_params)(jax.random.key(0)))
  return exp, params


def _loss(exp, params, key):
  batch = jax.jit(exp.sample_batch)(exp.frozen, key, 0)
  loss, m = jax.jit(exp.loss_fn)(params, exp.frozen, batch, jax.random.key(9))
  return batch, float(loss), {k: float(v) for k, v in m.items()}


def test_same_loss_with_and_without_the_cache(suite_dir):
  live, params = _built(_cfg(suite_dir))
  full, _ = _built(_cfg(suite_dir, **{"teacher.cache": "full"}))
  # The byte tokenizer's 256 tokens: top-255 leaves one token in the tail bucket, so the
  # coarsened KL is the KL itself; top-8 can only be smaller (data processing).
  top_all, _ = _built(_cfg(suite_dir, **{"teacher.cache": "topk", "teacher.top_k": 255}))
  top8, _ = _built(_cfg(suite_dir, **{"teacher.cache": "topk", "teacher.top_k": 8}))
  buckets = set()
  for i in range(6):
    key = jax.random.key(i)
    b, l_live, m_live = _loss(live, params, key)
    b_full, l_full, m_full = _loss(full, params, key)
    np.testing.assert_array_equal(b["episode"], b_full["episode"])  # The same batch.
    buckets.add(int(b["bucket"][0]))
    np.testing.assert_allclose(l_full, l_live, rtol=2e-5)
    np.testing.assert_allclose(m_full["kl"], m_live["kl"], rtol=1e-4, atol=1e-6)
    _, l_all, m_all = _loss(top_all, params, key)
    np.testing.assert_allclose(l_all, l_live, rtol=2e-5)
    _, _, m8 = _loss(top8, params, key)
    assert m8["kl"] <= m_live["kl"] * (1 + 1e-4) + 1e-7
    assert m8["ce"] == pytest.approx(m_live["ce"], rel=1e-5)
  assert len(buckets) >= 2  # Several buckets were drawn, each checked.


def test_bucket_shape_gives_the_full_shape_loss(suite_dir):
  exp, params = _built(_cfg(suite_dir))
  shapes = exp.objects["buckets"]
  assert len(shapes) >= 2 and shapes[-1][0] <= exp.objects["demo_slots"]
  full = (exp.objects["demo_slots"], exp.frozen["train"]["query_ids"].shape[1])
  loss_at = jax.jit(exp.objects["loss_at"], static_argnums=0)
  for i in range(4):
    batch = jax.jit(exp.sample_batch)(exp.frozen, jax.random.key(i), 0)
    shape = shapes[int(batch["bucket"][0])]
    # Every real token of the batch fits its bucket's shape.
    assert int(batch["demo_mask"][:, shape[0]:].sum()) == 0
    assert int(batch["query_mask"][:, shape[1]:].sum()) == 0
    a, _ = loss_at(shape, params, exp.frozen["lm"], batch, jax.random.key(1))
    b, _ = loss_at(full, params, exp.frozen["lm"], batch, jax.random.key(1))
    np.testing.assert_allclose(float(a), float(b), rtol=2e-5)


def test_buckets_keep_every_episode_equally_likely(suite_dir):
  exp, _ = _built(_cfg(suite_dir))
  t = jax.tree.map(np.asarray, exp.frozen["train"])
  assert sorted(t["order"].tolist()) == list(range(48))
  # P(episode) = P(bucket) / |bucket| = (|bucket| / N) / |bucket| = 1 / N.
  counts = np.zeros(48)
  sample = jax.jit(lambda k: episodes.sample(k, exp.frozen["train"], 8)["episode"])
  for i in range(400):
    np.add.at(counts, np.asarray(sample(jax.random.key(i))), 1)
  expected = 400 * 8 / 48
  assert abs(counts.mean() - expected) < 1e-9 and counts.min() > 0.4 * expected


def test_cache_is_content_keyed_and_checksummed(suite_dir, tmp_path):
  exp, _ = _built(_cfg(suite_dir))
  lm = exp.objects["lm"]
  td = exp.objects["demo_slots"]
  cfg = _cfg(suite_dir)
  from research.mend import experiment as mend_experiment
  pool, _, _ = mend_experiment.stage2_data(cfg, lm.tokenizer)
  table = episodes.build_table(pool, k=cfg.data.k, td=td, num_episodes=12, seed=3)
  root = str(tmp_path / "cache")
  cache = teacher_cache.TeacherCache(root, lm, "topk", 8, 1.0, verbose=False)
  first = cache.get(table, 48)
  assert cache.stats["computed"] == 12 and cache.stats["hits"] == 0
  again = teacher_cache.TeacherCache(root, lm, "topk", 8, 1.0, verbose=False)
  jax.tree.map(np.testing.assert_array_equal, again.get(table, 48), first)
  assert again.stats == dict(again.stats, hits=12, computed=0)
  # A smaller table of the same seed is a prefix: every entry is found.
  prefix = episodes.build_table(pool, k=cfg.data.k, td=td, num_episodes=5, seed=3)
  sub = teacher_cache.TeacherCache(root, lm, "topk", 8, 1.0, verbose=False)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b[:5]), sub.get(prefix, 48),
               first)
  assert sub.stats["computed"] == 0
  # A corrupted shard is caught by its checksum, set aside and computed again: same bits.
  shard, = glob.glob(os.path.join(cache.directory, "*.npz"))
  with open(shard, "r+b") as f:
    f.seek(os.path.getsize(shard) // 2)
    byte = f.read(1)
    f.seek(-1, 1)
    f.write(bytes([byte[0] ^ 0xFF]))
  fixed = teacher_cache.TeacherCache(root, lm, "topk", 8, 1.0, verbose=False)
  jax.tree.map(np.testing.assert_array_equal, fixed.get(table, 48), first)
  assert fixed.stats["corrupt_shards"] == 1 and fixed.stats["computed"] == 12
  assert os.path.exists(shard + ".corrupt")
  # Another temperature or k is another teacher: other entries.
  assert teacher_cache.TeacherCache(root, lm, "topk", 8, 2.0).directory != cache.directory
  assert teacher_cache.TeacherCache(root, lm, "topk", 4, 1.0).directory != cache.directory


def _train_with_stops(cfg, workdir, stops):
  """Runs cfg to the end, sending SIGTERM to this process once the run's metrics reach
  each step in `stops` (the trainer saves and exits; the run is then started again)."""
  for stop in list(stops) + [None]:
    done = threading.Event()
    if stop is not None:
      def watch(stop=stop):
        while not done.is_set():
          rows = metrics_lib.read_metrics(workdir, "train") if os.path.exists(
              os.path.join(workdir, "metrics.jsonl")) else []
          if rows and rows[-1]["step"] >= stop:
            os.kill(os.getpid(), signal.SIGTERM)
            return
          time.sleep(0.01)
      threading.Thread(target=watch, daemon=True).start()
    try:
      train.run(cfg, workdir)
      return
    except SystemExit:
      pass
    finally:
      done.set()


@pytest.mark.slow
def test_stopped_and_resumed_many_times_is_bit_identical(suite_dir, tmp_path):
  """Table, buckets, cached teacher and dropout together, through the trainer."""
  cfg = _cfg(suite_dir, **{"teacher.cache": "topk", "teacher.top_k": 16,
                           "dropout.distiller": 0.1, "dropout.student": 0.1,
                           "train.num_steps": 12, "train.log_every": 1,
                           "train.checkpoint_every": 1, "train.eval_every": 6})
  ref, stopped = str(tmp_path / "ref"), str(tmp_path / "stopped")
  final_ref = train.run(cfg, ref)
  _train_with_stops(cfg, stopped, stops=(3, 8))
  final = train.run(cfg, stopped)
  starts = [r["step"] for r in metrics_lib.read_metrics(stopped, "info")]
  assert len(starts) == 3 and starts[0] == 0 and 0 < starts[1] < starts[2] < 12, starts
  rows = lambda w: {r["step"]: r["loss"] for r in metrics_lib.read_metrics(w, "train")}
  assert rows(stopped) == rows(ref)
  assert final == final_ref
  mngr = lambda w: checkpoint.manager(w, max_to_keep=2)
  a, b = mngr(ref), mngr(stopped)
  assert a.latest_step() == b.latest_step() == 12
  from orbax import checkpoint as ocp
  sa = a.restore(12, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  sb = b.restore(12, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  jax.tree.map(np.testing.assert_array_equal, sa["params"], sb["params"])


def test_stage2_breakdown_bench_runs_on_the_tiny_model(tmp_path):
  """`make bench`'s MEND breakdown (research/mend/bench.py) on the tiny LLM: every part
  timed before and after, whole steps of both, and the top-k KL's truncation error —
  which shrinks as k grows and never exceeds the full KL (the tail bucket only merges)."""
  from research.mend import bench
  r = bench.bench_stage2_breakdown(steps=1, episodes=8, suite_dir=str(tmp_path), rounds=1,
                                   tiny=True, full=True)
  for name in ("before", "after"):
    assert r[name]["mean_step_s"] > 0 and set(r[name]["parts_s"]) == {
        "teacher_fwd", "teacher_fwd_legacy", "distiller_fwd_bwd", "student_fwd_bwd",
        "vocab_kl_fwd_bwd"}
  assert r["after"]["teacher_cache_computed"] + r["after"]["teacher_cache_hits"] == 8
  errs = [r["truncation"][f"top{k}"]["relative_error"] for k in bench.TOP_K]
  assert all(e >= -1e-6 for e in errs) and errs[0] >= errs[-1]
  assert r["after_full"]["mean_step_s"] > 0 and r["speedup_steps_per_hour_full_cache"] > 0
  assert "steps / hour" in bench.markdown(r) and "full-vocabulary cache" in bench.markdown(r)

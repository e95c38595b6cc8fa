"""Stage 2's episodes as a finite table, grouped into shape buckets, sampled on device.

An episode is (task, query row, K demonstration rows of the same task). With
`data.episodes = N > 0` stage 2 draws its batches from a table of N episodes fixed
before training: episode i is a pure function of (data.episode_seed, i) and the task
pool — the task uniform over the meta-train tasks, the query uniform within it, K
other rows of the task without replacement as its demonstrations, packed as
everywhere else (" x y" rows, whole demonstrations dropped from the left when they do
not fit the Td slots; `research/mend/data.py`). The first n episodes of a larger
table are a table of n episodes, so runs of different sizes share episodes (and
teacher-cache entries). MetaICL itself trains on a table made once by its
preprocessing; `data.episodes = 0` keeps the fresh demonstrations every step of the
runs made before the table existed (no cache and no buckets then).

Why a table: the teacher's outputs on an episode depend on no trainable parameter,
so they are computed once (`teacher_cache.py`), and every episode's real lengths are
known before training, so a batch can run at the shapes it needs:

Buckets (`data.buckets = B`). Rows are short and unequal (SmolLM2 tokens per " x y"
row on the offline suite's class_to_class tasks: 2 to 33), yet every step used to run
the distiller on Td = 336 demonstration slots and the LLM on Tq = 48 query slots. The
table is split into B groups by estimated cost (quantiles of the episodes' padded
lengths under a FLOP model: distiller forward + backward over D + l tokens, student
forward + backward over l + Q tokens through the frozen LLM, the teacher forward over
D + Q when it is not cached); each bucket's shape (D_b, Q_b) is the largest of its
group, and each episode goes to the cheapest bucket it fits. A step first draws a
bucket with probability ∝ its number of episodes, then `batch_size` episodes of
that bucket uniformly (with replacement), so every episode keeps probability 1/N per
draw (the objective's distribution over episodes is unchanged; a batch is
length-homogeneous, as bucketed batches in machine translation). The loss runs in
`jax.lax.switch` over the buckets: one executable, each branch at its static shape.
Positions come from the attention masks, so padding changes no output (tested): a
branch computes the loss the full shapes compute, to float rounding.

Everything here is a pure function of its inputs: batches stay a pure function of
(seed, step) and a resumed run is bit-identical.
"""
from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp

from research.mend import data as mend_data

DEMO_QUANTUM = 16   # Demonstration-slot lengths of buckets: multiples of this.
QUERY_QUANTUM = 8   # Query-slot lengths of buckets: multiples of this.


def build_table(pool: dict, *, k: int, td: int, num_episodes: int, seed: int
                ) -> dict[str, np.ndarray]:
  """N episodes from an encoded task pool (`mend_data.encode_task_pool`).

  Returns host arrays: demo_ids [N, Td] (right-padded), demo_len [N], query_ids
  [N, E], query_len [N], x_len [N] (tokens of " x" in the query row), task [N],
  query_row [N].
  """
  ids, lens, xlens = pool["ids"], pool["lens"], pool["xlens"]
  starts, counts = pool["start"], pool["count"]
  n, e = num_episodes, ids.shape[1]
  out = {"demo_ids": np.zeros((n, td), np.int32), "demo_len": np.zeros((n,), np.int32),
         "query_ids": np.zeros((n, e), np.int32), "query_len": np.zeros((n,), np.int32),
         "x_len": np.zeros((n,), np.int32), "task": np.zeros((n,), np.int32),
         "query_row": np.zeros((n,), np.int32)}
  for i in range(n):
    rng = np.random.default_rng([seed, i])  # Episode i alone: tables share prefixes.
    t = int(rng.integers(len(starts)))
    start, count = int(starts[t]), int(counts[t])
    q = start + int(rng.integers(count))
    others = np.asarray([r for r in range(start, start + count) if r != q])
    pick = rng.choice(others, size=min(k, len(others)), replace=False)
    demo, _ = mend_data.pack_demonstrations([ids[r, :lens[r]] for r in pick], td)
    out["demo_ids"][i, :len(demo)] = demo
    out["demo_len"][i] = len(demo)
    out["query_ids"][i] = ids[q]
    out["query_len"][i], out["x_len"][i] = lens[q], xlens[q]
    out["task"][i], out["query_row"][i] = t, q
  return out


def _round_up(x, quantum, low, high):
  return np.clip(-(-np.maximum(x, 1) // quantum) * quantum, low, high)


def step_cost(d, q, *, num_vectors: int, distiller_layers: int, llm_layers: int,
              live_teacher: bool):
  """Relative FLOPs of one episode at demonstration / query slots (d, q): forward +
  backward of the distiller (×3), forward + activation-backward of the student through
  the frozen LLM (×2), the teacher's forward (×1) when it runs in the step."""
  c = 3 * distiller_layers * (d + num_vectors) + 2 * llm_layers * (num_vectors + q)
  if live_teacher:
    c = c + llm_layers * (d + q)
  return c


def make_buckets(table: dict, num_buckets: int, td: int, tq: int, **cost_kw
                 ) -> tuple[list[tuple[int, int]], np.ndarray]:
  """([(D_b, Q_b)] sorted by cost, bucket of every episode); see the module docstring.
  One bucket = the full slots (Td, Tq)."""
  if num_buckets <= 1:
    return [(td, tq)], np.zeros(len(table["demo_len"]), np.int32)
  d = _round_up(table["demo_len"], DEMO_QUANTUM, DEMO_QUANTUM, td)
  q = _round_up(table["query_len"], QUERY_QUANTUM, QUERY_QUANTUM, tq)
  cost = step_cost(d, q, **cost_kw)
  order = np.argsort(cost, kind="stable")
  groups = np.array_split(order, num_buckets)
  shapes = sorted({(int(d[g].max()), int(q[g].max())) for g in groups if len(g)},
                  key=lambda s: (step_cost(*s, **cost_kw), s))
  costs = np.array([step_cost(*s, **cost_kw) for s in shapes])
  assign = np.zeros(len(d), np.int32)
  for i in range(len(d)):
    fits = [b for b, (db, qb) in enumerate(shapes) if d[i] <= db and q[i] <= qb]
    assign[i] = min(fits, key=lambda b: costs[b])
  used = sorted(set(assign.tolist()))  # Drop buckets nobody is cheapest in.
  remap = {b: j for j, b in enumerate(used)}
  return [shapes[b] for b in used], np.asarray([remap[int(a)] for a in assign], np.int32)


def device_table(table: dict, assign: np.ndarray, num_buckets: int, tq: int) -> dict:
  """The arrays a step samples from (host NumPy; placed by the experiment)."""
  n = len(assign)
  j = np.arange(tq)
  qlen = table["query_len"][:, None]
  query_mask = (j[None] < qlen).astype(np.int32)
  target = query_mask * (j[None] >= table["x_len"][:, None])
  order = np.argsort(assign, kind="stable").astype(np.int32)
  count = np.bincount(assign, minlength=num_buckets).astype(np.int32)
  start = (np.cumsum(count) - count).astype(np.int32)
  demo_mask = (np.arange(table["demo_ids"].shape[1])[None] < table["demo_len"][:, None])
  return {"demo_ids": table["demo_ids"], "demo_mask": demo_mask.astype(np.int32),
          "query_ids": table["query_ids"][:, :tq], "query_mask": query_mask,
          "target_mask": target.astype(np.int32), "bucket": assign.astype(np.int32),
          "order": order, "bucket_start": start, "bucket_count": count,
          "index": np.arange(n, dtype=np.int32)}


ROW_KEYS = ("demo_ids", "demo_mask", "query_ids", "query_mask", "target_mask")


def sample(key, table: dict, batch_size: int, extra: dict | None = None) -> dict:
  """A batch of one bucket: rows of the table (and of `extra`, arrays with a leading
  episode axis such as the cached teacher outputs), plus "episode" and "bucket" [B]."""
  k_bucket, k_rows = jax.random.split(key)
  count = table["bucket_count"]
  b = jax.random.categorical(k_bucket, jnp.log(count.astype(jnp.float32)))
  j = jax.random.randint(k_rows, (batch_size,), 0, count[b])
  idx = table["order"][table["bucket_start"][b] + j]
  out = {k: table[k][idx] for k in ROW_KEYS}
  out.update({k: v[idx] for k, v in (extra or {}).items()})
  out["episode"] = idx
  out["bucket"] = jnp.full((batch_size,), b, jnp.int32)
  return out


def at_shape(batch: dict, d: int, q: int) -> dict:
  """The batch cut to demonstration slots d and query slots q (static)."""
  out = dict(batch)
  for key in ("demo_ids", "demo_mask"):
    out[key] = batch[key][:, :d]
  for key in ("query_ids", "query_mask", "target_mask"):
    out[key] = batch[key][:, :q]
  for key, v in batch.items():
    if key.startswith("teacher_"):
      out[key] = v[:, :q]
  return out

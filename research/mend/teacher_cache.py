"""A content-keyed, checksummed cache of the frozen teacher's outputs on stage-2 episodes.

The teacher LLM(demonstrations ⊕ query) depends on no trainable parameter, so its
next-token distributions at the query slots are computed once per episode and read
by every later step, run and resume (`teacher.cache = "topk" | "full"`):

  full   log p_T(v) over the whole vocabulary at every real query slot: the KL is the
         one the live teacher gives (to float rounding: the cache runs the teacher at
         canonical shapes, see below). Memory: query tokens × vocabulary × 4 bytes
         (SmolLM2: 197 KB per query token), for small tables and checks.
  topk   the k most likely tokens, their log p_T and the log of the rest of the mass
         (`losses.kl_topk`: the KL of the k + 1 coarsened outcomes, ≤ the full KL;
         `research/mend/bench.py` measures the gap): k × 8 + 4 bytes per query token.

Keys. An entry is keyed by the SHA-1 of the episode's real tokens (demonstrations,
then the query), inside a directory named by the teacher: a fingerprint of the LLM
(its config and every parameter's bytes), the mode, k, the temperature and the
layout version. Episodes of different runs (table sizes, task counts, seeds) meet in
the same entries when their tokens are equal; a different LLM or temperature never
reads them.

Checksums. Entries are written in shards `<sha256>.npz`, named by the SHA-256 of
their bytes (written atomically); every shard is verified when read, and one that
does not match its name is moved aside (`.corrupt`) and its episodes computed again.

Determinism. The teacher runs at canonical shapes — demonstration slots rounded up to
a multiple of `CANON_DEMO`, query slots to `CANON_QUERY`, batches of `FILL_BATCH`
rows (unused rows masked) — so an entry's bits depend on its episode alone, not on
which other episodes were missing when it was computed: a cache filled again after
being deleted holds the same bits, and resumed runs stay bit-identical.
"""
from __future__ import annotations

import hashlib
import io
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from research import workdir as workdir_lib
from research.mend import losses

VERSION = 1
MODES = ("none", "topk", "full")
CANON_DEMO = 64
CANON_QUERY = 16
FILL_BATCH = 8


def llm_fingerprint(lm) -> str:
  """SHA-256 of an LM's config and parameter bytes (host arrays, sorted paths)."""
  h = hashlib.sha256(repr(lm.config).encode())
  leaves = jax.tree_util.tree_leaves_with_path(nn.unbox(lm.params))
  for path, leaf in sorted(leaves, key=lambda pl: jax.tree_util.keystr(pl[0])):
    arr = np.ascontiguousarray(np.asarray(leaf))
    h.update(jax.tree_util.keystr(path).encode())
    h.update(str((arr.shape, arr.dtype)).encode())
    h.update(arr.tobytes())
  return h.hexdigest()


def episode_keys(table: dict) -> list[bytes]:
  """SHA-1 of each episode's real demonstration and query tokens."""
  out = []
  for i in range(len(table["demo_len"])):
    h = hashlib.sha1(np.int32(table["demo_len"][i]).tobytes())
    h.update(np.ascontiguousarray(table["demo_ids"][i, :table["demo_len"][i]], np.int32))
    h.update(np.ascontiguousarray(table["query_ids"][i, :table["query_len"][i]], np.int32))
    out.append(h.digest())
  return out


class TeacherCache:
  """The entries of one teacher (LLM, mode, k, temperature) under `root`."""

  def __init__(self, root: str, lm, mode: str, top_k: int, temperature: float,
               fingerprint: str | None = None, verbose: bool = True):
    if mode not in MODES[1:]:
      raise ValueError(f"teacher cache mode must be one of {MODES[1:]}, got {mode!r}")
    self.lm, self.mode, self.k, self.temperature = lm, mode, int(top_k), float(temperature)
    fp = fingerprint or llm_fingerprint(lm)
    name = f"{fp[:16]}_{mode}" + (f"{self.k}" if mode == "topk" else "")
    self.directory = os.path.join(root, f"{name}_T{self.temperature:g}_v{VERSION}")
    self.verbose = verbose
    self._fns: dict = {}
    self.stats = {"hits": 0, "computed": 0, "corrupt_shards": 0, "fill_seconds": 0.0}

  # ------------------------------------------------------------------------------
  # Shards.
  # ------------------------------------------------------------------------------
  def _shards(self) -> list[str]:
    if not os.path.isdir(self.directory):
      return []
    return sorted(f for f in os.listdir(self.directory) if f.endswith(".npz"))

  def _read(self) -> dict[bytes, tuple[dict, int, int]]:
    """{key: (shard arrays, row offset, query tokens)} of every verified shard."""
    index = {}
    for name in self._shards():
      path = os.path.join(self.directory, name)
      with open(path, "rb") as f:
        blob = f.read()
      if hashlib.sha256(blob).hexdigest() != name[:-4]:
        os.replace(path, path + ".corrupt")
        self.stats["corrupt_shards"] += 1
        self._say(f"teacher cache: {path} does not match its checksum; moved aside, its "
                  f"episodes will be computed again")
        continue
      with np.load(io.BytesIO(blob)) as z:
        arrays = {k: z[k] for k in z.files}
      offsets = np.concatenate([[0], np.cumsum(arrays["qlen"])])
      for j, key in enumerate(arrays["keys"]):
        index[bytes(key)] = (arrays, int(offsets[j]), int(arrays["qlen"][j]))
    return index

  def _write(self, keys: list[bytes], entries: list[dict]) -> None:
    arrays = {"keys": np.frombuffer(b"".join(keys), np.uint8).reshape(len(keys), -1),
              "qlen": np.asarray([e["qlen"] for e in entries], np.int32)}
    for name in entries[0]:
      if name != "qlen":
        arrays[name] = np.concatenate([e[name] for e in entries])
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    blob = buf.getvalue()
    if jax.process_index() == 0:
      os.makedirs(self.directory, exist_ok=True)
      workdir_lib.write_atomic(
          os.path.join(self.directory, hashlib.sha256(blob).hexdigest() + ".npz"), blob)

  # ------------------------------------------------------------------------------
  # The teacher at canonical shapes.
  # ------------------------------------------------------------------------------
  def _fn(self, d: int, q: int):
    if (d, q) not in self._fns:
      model, mode, k, temp = self.lm.model, self.mode, self.k, self.temperature

      def run(params, demo_ids, demo_mask, query_ids, query_mask):
        logits = losses.teacher_logits(model, params, demo_ids, demo_mask, query_ids,
                                       query_mask)
        if mode == "full":
          return {"logp": losses.log_probs(logits, temp)}
        return losses.teacher_topk(logits, k, temp)
      self._fns[(d, q)] = jax.jit(run)
    return self._fns[(d, q)]

  def _compute(self, table: dict, rows: np.ndarray, params) -> list[dict]:
    """Entries (arrays over each episode's real query slots) for table rows `rows`."""
    dl, ql = table["demo_len"][rows], table["query_len"][rows]
    d_c = -(-np.maximum(dl, 1) // CANON_DEMO) * CANON_DEMO
    q_c = -(-np.maximum(ql, 1) // CANON_QUERY) * CANON_QUERY
    out: dict[int, dict] = {}
    start, done = time.perf_counter(), 0
    for d, q in sorted(set(zip(d_c.tolist(), q_c.tolist()))):
      group = rows[(d_c == d) & (q_c == q)]
      for c in range(0, len(group), FILL_BATCH):
        chunk = group[c:c + FILL_BATCH]
        arr = {"demo_ids": np.zeros((FILL_BATCH, d), np.int32),
               "demo_mask": np.zeros((FILL_BATCH, d), np.int32),
               "query_ids": np.zeros((FILL_BATCH, q), np.int32),
               "query_mask": np.zeros((FILL_BATCH, q), np.int32)}
        for j, r in enumerate(chunk):
          n_d, n_q = table["demo_len"][r], table["query_len"][r]
          arr["demo_ids"][j, :n_d], arr["demo_mask"][j, :n_d] = table["demo_ids"][r, :n_d], 1
          arr["query_ids"][j, :n_q] = table["query_ids"][r, :n_q]
          arr["query_mask"][j, :n_q] = 1
        res = jax.device_get(self._fn(d, q)(params, arr["demo_ids"], arr["demo_mask"],
                                            arr["query_ids"], arr["query_mask"]))
        for j, r in enumerate(chunk):
          n_q = int(table["query_len"][r])
          out[int(r)] = dict({name: np.asarray(v[j, :n_q]) for name, v in res.items()},
                             qlen=n_q)
        done += len(chunk)
        if self.verbose and (c // FILL_BATCH) % 25 == 0:
          rate = done / max(time.perf_counter() - start, 1e-9)
          self._say(f"teacher cache: {done}/{len(rows)} episodes ({rate:.2f}/s, shape "
                    f"demo {d} + query {q})")
    return [out[int(r)] for r in rows]

  # ------------------------------------------------------------------------------
  # The cache's one call.
  # ------------------------------------------------------------------------------
  def get(self, table: dict, tq: int, params=None) -> dict[str, np.ndarray]:
    """The teacher's outputs for every episode of `table`, as arrays with a leading
    episode axis and `tq` query slots ("teacher_logp" [N, tq, V] for full;
    "teacher_ids", "teacher_logp" [N, tq, k] and "teacher_tail" [N, tq] for top-k;
    slots past an episode's query are 0). Missing entries are computed and written."""
    keys = episode_keys(table)
    index = self._read()
    missing = sorted({i for i, key in enumerate(keys) if key not in index},
                     key=lambda i: keys[i])
    first = {}
    for i, key in enumerate(keys):
      if key not in index and key not in first:
        first[key] = i
    todo = np.asarray(sorted(first.values()), np.int64)
    self.stats["hits"] += len(keys) - len(missing)
    if len(todo):
      self._say(f"teacher cache {self.directory}: {len(todo)} of {len(set(keys))} distinct "
                f"episodes to compute")
      t0 = time.perf_counter()
      entries = self._compute(table, todo, self.lm.params if params is None else params)
      self.stats["fill_seconds"] += time.perf_counter() - t0
      self.stats["computed"] += len(todo)
      self._write([keys[i] for i in todo], entries)
      for i, e in zip(todo, entries):
        index[keys[i]] = (e, 0, e["qlen"])
    n = len(keys)
    if self.mode == "full":
      shapes = {"logp": ((self.lm.config.vocab_size,), np.float32)}
    else:
      shapes = {"ids": ((self.k,), np.int32), "logp": ((self.k,), np.float32),
                "tail": ((), np.float32)}
    out = {name: np.zeros((n, tq, *shape), dtype) for name, (shape, dtype) in shapes.items()}
    for i, key in enumerate(keys):
      arrays, off, qlen = index[key]
      for name in shapes:
        out[name][i, :qlen] = arrays[name][off:off + qlen]
    return {f"teacher_{name}": v for name, v in out.items()}

  def _say(self, text: str) -> None:
    if self.verbose and jax.process_index() == 0:
      print(text, flush=True)


def cached_outputs(batch: dict):
  """The teacher entries a batch carries (from `TeacherCache.get`, gathered per
  episode), in the form `losses.mend_loss` takes; None if it carries none."""
  if "teacher_ids" in batch:
    return {"ids": batch["teacher_ids"], "logp": batch["teacher_logp"],
            "tail": batch["teacher_tail"]}
  if "teacher_logp" in batch:
    return {"logp": batch["teacher_logp"]}
  return None

"""MEND's data: plain text for stage 1, meta-train task rows for stage 2, both
tokenised on the host once and sampled on device (batches are pure in the key).

Demonstration packing (training and evaluation alike): every demonstration is
encoded as " x y" (MetaICL's per-example form with a leading space, the input cut
to `max_row_tokens`), the K demonstrations are concatenated without separators and
right-padded into a slot of Td tokens; when they do not fit, whole demonstrations
are dropped from the left (the earliest first), never the query
(`pack_demonstrations`, and its device twin `pack_on_device`).

The offline plain-text corpus (`offline_corpus`, no download; deterministic):
  * `pydoc_data.topics`: the Python reference manual's help topics (English prose);
  * the docstrings of a fixed list of standard-library modules (module, public
    classes and functions) that are at least `min_chars` long;
  * scikit-learn's dataset descriptions (`sklearn/datasets/descr/*.rst`);
  * the Zen of Python (`this`).
Documents whose crc32 is ≡ 0 mod 10 are held out for validation. C4 (the paper's
corpus) is read through TFDS for users who have prepared `c4/en`.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.resources
import inspect
import io
import zlib
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from research.data import manifest
from research.errors import first_line

STDLIB_MODULES = (
    "abc", "argparse", "asyncio", "base64", "bisect", "calendar", "collections", "contextlib",
    "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "email", "enum",
    "fractions", "functools", "glob", "gzip", "hashlib", "heapq", "hmac", "html", "http.client",
    "imaplib", "inspect", "io", "ipaddress", "itertools", "json", "locale", "logging",
    "mailbox", "math", "mimetypes", "operator", "os", "pathlib", "pdb", "pprint", "queue",
    "random", "re", "sched", "secrets", "shlex", "shutil", "smtplib", "socket", "sqlite3",
    "statistics", "string", "struct", "subprocess", "tarfile", "tempfile", "textwrap",
    "threading", "timeit", "tokenize", "trace", "typing", "unittest", "urllib.parse",
    "uuid", "warnings", "weakref", "zipfile")


# --------------------------------------------------------------------------------------
# Plain text (stage 1).
# --------------------------------------------------------------------------------------

def offline_corpus(min_chars: int = 400) -> list[str]:
  """Packaged English text as a list of documents (see the module docstring)."""
  docs: list[str] = []
  from pydoc_data import topics  # pylint: disable=import-outside-toplevel
  docs += [topics.topics[k] for k in sorted(topics.topics)]
  for name in STDLIB_MODULES:
    try:
      mod = importlib.import_module(name)
    except ImportError:
      continue
    docs.append(inspect.getdoc(mod) or "")
    for attr in sorted(dir(mod)):
      if attr.startswith("_"):
        continue
      obj = getattr(mod, attr, None)
      if (inspect.isclass(obj) or inspect.isfunction(obj)) and getattr(
          obj, "__module__", "") == mod.__name__:
        docs.append(inspect.getdoc(obj) or "")
  try:
    descr = importlib.resources.files("sklearn.datasets") / "descr"
    docs += [f.read_text() for f in sorted(descr.iterdir(), key=lambda f: f.name)
             if f.name.endswith(".rst")]
  except ModuleNotFoundError:
    pass
  with contextlib.redirect_stdout(io.StringIO()):  # Its first import prints the Zen.
    import this  # pylint: disable=import-outside-toplevel
  docs.append("".join(this.d.get(ch, ch) for ch in this.s))
  seen, unique = set(), []
  for d in docs:
    d = d.strip()
    if len(d) >= min_chars and d not in seen:
      seen.add(d)
      unique.append(d)
  return unique


def c4_documents(n: int, split: str = "validation", data_dir: str | None = None) -> list[str]:
  """The first n documents of TFDS `c4/en` (the paper's C4-en validation)."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    src = tfds.data_source("c4/en", split=split, data_dir=data_dir)
  except Exception as e:  # pylint: disable=broad-except
    raise manifest.DataError(
        f"TFDS c4/en ({split}) is not prepared here ({type(e).__name__}: {first_line(e)}). "
        "Prepare it with `tfds build c4/en --data_dir DIR` (needs the C4 download) and pass "
        "--config.data.tfds_data_dir=DIR, or use --config.data.corpus=offline") from e
  out = []
  for i in range(min(n, len(src))):
    text = src[i]["text"]
    out.append(text.decode("utf-8") if isinstance(text, bytes) else str(text))
  return out


def is_held_out(doc: str) -> bool:
  return zlib.crc32(doc.encode("utf-8")) % 10 == 0


def encode_documents(tok, docs: Sequence[str], window: int, min_tokens: int,
                     demo_fraction: float = 0.8) -> dict[str, np.ndarray]:
  """Token windows of ≤ `window` tokens (long documents give several), each split
  into its first `demo_fraction` (demonstrations) and the rest (query).

  Returns right-padded arrays demo_ids/demo_mask [N, Td], query_ids/query_mask/
  target_mask [N, Tq] with Td = ⌊0.8·window⌋, Tq = window − ⌊0.8·min_tokens⌋.
  """
  td = int(demo_fraction * window)
  tq = window - int(demo_fraction * min_tokens)
  rows = []
  for d in docs:
    ids = tok.encode(d)
    for s in range(0, len(ids), window):
      w = ids[s:s + window]
      if len(w) >= min_tokens:
        rows.append(w)
  if not rows:
    raise ValueError(f"no document has {min_tokens} tokens; lower data.min_tokens")
  n = len(rows)
  out = {"demo_ids": np.zeros((n, td), np.int32), "demo_mask": np.zeros((n, td), np.int32),
         "query_ids": np.zeros((n, tq), np.int32), "query_mask": np.zeros((n, tq), np.int32)}
  for i, w in enumerate(rows):
    nd = int(demo_fraction * len(w))
    d, q = w[:nd], w[nd:]
    out["demo_ids"][i, :nd], out["demo_mask"][i, :nd] = d, 1
    out["query_ids"][i, :len(q)], out["query_mask"][i, :len(q)] = q, 1
  out["target_mask"] = out["query_mask"].copy()  # Plain text: every query token.
  return out


def sample_rows(key, arrays: dict, batch_size: int) -> dict:
  """A batch of random rows of equally long arrays (stage 1)."""
  n = next(iter(arrays.values())).shape[0]
  idx = jax.random.randint(key, (batch_size,), 0, n)
  return {k: v[idx] for k, v in arrays.items()}


# --------------------------------------------------------------------------------------
# Task rows (stage 2).
# --------------------------------------------------------------------------------------

def encode_row(tok, ex, max_row_tokens: int) -> tuple[list[int], int]:
  """Tokens of " x y" (input cut so the row fits) and the length of " x"."""
  y = tok.encode(" " + ex["output"])[:max_row_tokens - 1]
  x = tok.encode(" " + ex["input"])[:max(1, max_row_tokens - len(y))]
  return x + y, len(x)


def encode_task_pool(tok, rows_by_task: dict[str, Sequence[dict]], max_row_tokens: int
                     ) -> dict[str, np.ndarray]:
  """All rows of all tasks as [R, E] tokens plus per-task [start, count)."""
  tasks = sorted(t for t, r in rows_by_task.items() if len(r) >= 2)
  if not tasks:
    raise ValueError("stage 2 needs meta-train tasks with at least 2 rows each")
  enc, starts, counts = [], [], []
  for t in tasks:
    starts.append(len(enc))
    enc += [encode_row(tok, ex, max_row_tokens) for ex in rows_by_task[t]]
    counts.append(len(rows_by_task[t]))
  r = len(enc)
  ids = np.zeros((r, max_row_tokens), np.int32)
  lens = np.zeros((r,), np.int32)
  xlens = np.zeros((r,), np.int32)
  for i, (row, xl) in enumerate(enc):
    ids[i, :len(row)], lens[i], xlens[i] = row, len(row), xl
  return {"ids": ids, "lens": lens, "xlens": xlens, "start": np.asarray(starts, np.int32),
          "count": np.asarray(counts, np.int32)}


def pack_on_device(rows, lens, td: int):
  """Concatenate K rows [K, E] (real lengths `lens`) into Td right-padded slots,
  dropping whole rows from the left until the rest fits. -> (ids [Td], mask [Td])."""
  k, e = rows.shape
  suffix = jnp.cumsum(lens[::-1])[::-1]  # tokens of rows k..K-1
  lens = jnp.where(suffix <= td, lens, 0)
  ends = jnp.cumsum(lens)
  starts = ends - lens
  p = jnp.arange(td)
  which = jnp.clip(jnp.searchsorted(ends, p, side="right"), 0, k - 1)
  within = jnp.clip(p - starts[which], 0, e - 1)
  valid = p < ends[-1]
  return jnp.where(valid, rows[which, within], 0), valid.astype(jnp.int32)


def pack_demonstrations(encoded: Sequence[Sequence[int]], td: int) -> tuple[list[int], int]:
  """Host twin of `pack_on_device`: (concatenated ids ≤ td tokens, demonstrations kept)."""
  kept = len(encoded)
  while kept and sum(len(e) for e in encoded[len(encoded) - kept:]) > td:
    kept -= 1
  ids: list[int] = []
  for e in encoded[len(encoded) - kept:]:
    ids += list(e)
  return ids, kept


def sample_episode(key, pool: dict, k: int, td: int) -> dict:
  """One query row and k other rows of the same task as its demonstrations."""
  k_task, k_query, k_demo = jax.random.split(key, 3)
  n_tasks = pool["start"].shape[0]
  max_count = pool["max_count"]
  task = jax.random.randint(k_task, (), 0, n_tasks)
  start, count = pool["start"][task], pool["count"][task]
  q = start + jax.random.randint(k_query, (), 0, count)
  slot = jnp.arange(max_count)
  ok = (slot < count) & (start + slot != q)
  score = jnp.where(ok, jax.random.uniform(k_demo, (max_count,)), -1.0)
  pick = jnp.argsort(-score)[:k]
  rows = jnp.clip(start + pick, 0, pool["ids"].shape[0] - 1)
  lens = jnp.where(ok[pick], pool["lens"][rows], 0)
  demo_ids, demo_mask = pack_on_device(pool["ids"][rows], lens, td)
  e = pool["ids"].shape[1]
  j = jnp.arange(e)
  query_mask = (j < pool["lens"][q]).astype(jnp.int32)
  target_mask = query_mask * (j >= pool["xlens"][q])
  return {"demo_ids": demo_ids, "demo_mask": demo_mask, "query_ids": pool["ids"][q],
          "query_mask": query_mask, "target_mask": target_mask.astype(jnp.int32)}


def sample_episodes(key, pool: dict, batch_size: int, k: int, td: int) -> dict:
  return jax.vmap(lambda kk: sample_episode(kk, pool, k, td))(
      jax.random.split(key, batch_size))

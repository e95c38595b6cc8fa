"""MetaICL "direct" prompts: demonstrations, queries, truncation, demonstration sampling.

  * prompt = x1 y1 x2 y2 ... xK yK x, every output with a leading space and every
    input but the first with a leading space, no separators; each example capped at
    `max_length_per_example` tokens (its input is cut, as MetaICL does);
  * each option o is scored by the mean token NLL of " o" given the prompt (the
    lowest wins);
  * prompts longer than `max_length` drop whole demonstrations from the left, never
    the query. One prefix is built per (task, seed), with the budget left by the
    task's longest query + option, so every query of the task sees the same
    demonstrations (this makes the KV-cached prefix exact; MetaICL does the same).
"""
from __future__ import annotations

import dataclasses
from typing import Protocol, Sequence

import numpy as np

from research.llm.metaicl import data as icl_data

Ids = list[int]


class Tokenizer(Protocol):
  def encode(self, text: str) -> Ids: ...


@dataclasses.dataclass(frozen=True)
class PromptConfig:
  max_length: int = 1024  # MetaICL's max_length for GPT-2.
  max_length_per_example: int = 256
  bos_id: int | None = None  # Prepended to every prompt when set.


def encode_demonstration(tok: Tokenizer, ex: icl_data.Example, first: bool,
                         cfg: PromptConfig) -> Ids:
  """Tokens of "x y" (" x y" unless first), the input cut to fit the per-example cap."""
  x = tok.encode(ex["input"] if first else " " + ex["input"])
  y = tok.encode(" " + ex["output"])
  x = x[:max(1, cfg.max_length_per_example - 2 - len(y))]
  return x + y


def encode_query(tok: Tokenizer, ex: icl_data.Example, first: bool, cfg: PromptConfig
                 ) -> tuple[Ids, list[Ids]]:
  """Query input tokens and the tokens of every option (each with a leading space)."""
  opts = [tok.encode(" " + o) for o in ex["options"]]
  x = tok.encode(ex["input"] if first else " " + ex["input"])
  x = x[:max(1, cfg.max_length_per_example - 2 - max(len(o) for o in opts))]
  return x, opts


def build_prefix(tok: Tokenizer, demos: Sequence[icl_data.Example], budget: int,
                 cfg: PromptConfig) -> tuple[Ids, int]:
  """Concatenated demonstrations that fit `budget` tokens, dropping the earliest
  first (the query is never cut: `budget` already excludes it). Returns (ids, kept)."""
  enc = [encode_demonstration(tok, d, i == 0, cfg) for i, d in enumerate(demos)]
  bos = [cfg.bos_id] if cfg.bos_id is not None else []
  kept = len(enc)
  while kept and len(bos) + sum(len(e) for e in enc[len(enc) - kept:]) > budget:
    kept -= 1
  ids = list(bos)
  for e in enc[len(enc) - kept:]:
    ids += e
  return ids, kept


def query_rows(tok: Tokenizer, queries: Sequence[icl_data.Example], first: bool,
               cfg: PromptConfig) -> tuple[list[tuple[Ids, Ids]], list[int]]:
  """Flattened (query, option) rows and the number of options per query."""
  rows, counts = [], []
  bos = [cfg.bos_id] if (first and cfg.bos_id is not None) else []
  for q in queries:
    x, opts = encode_query(tok, q, first, cfg)
    rows += [(bos + x, o) for o in opts]
    counts.append(len(opts))
  return rows, counts


def prefix_budget(rows, cfg: PromptConfig) -> int:
  """Prefix tokens left once the longest query + option of the task fits."""
  return cfg.max_length - max(len(c) + len(o) for c, o in rows)


def split_rows(values: np.ndarray, counts: Sequence[int]) -> list[np.ndarray]:
  """Per-row scores back into one array of option scores per query."""
  return np.split(np.asarray(values), np.cumsum(counts)[:-1])


def sample_demonstrations(pool: Sequence[icl_data.Example], k: int, seed: int
                          ) -> list[icl_data.Example]:
  """k rows of `pool` in a seed-determined order (a pure function of (pool, k, seed))."""
  if k > len(pool):
    raise ValueError(f"asked for {k} demonstrations from a pool of {len(pool)}")
  idx = np.random.default_rng(seed).permutation(len(pool))[:k]
  return [pool[i] for i in idx]

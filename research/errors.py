"""Errors that mean "bad input", not "bug": the CLI prints them as one line and exits 2.

Every check that runs before compiling raises `ConfigError` with the key and the
fix. Kept apart from the config schema so any module (data loaders, registries,
the trainer) can raise it without importing the schema.
"""
from __future__ import annotations

from models.registry import ConfigError, UnknownName  # noqa: F401  (re-exported)

# What the entry points report as one line with exit code 2 (subclasses included:
# unknown registry names, data missing, checkpoint mismatch, sharding that cannot fit).
BAD_INPUT = (ConfigError,)


def first_line(error: BaseException | str, limit: int = 300) -> str:
  """The first non-blank line of an error's text, at most `limit` characters: what a
  one-line message quotes of a library's multi-line exception."""
  lines = str(error).strip().splitlines()
  return lines[0][:limit] if lines else ""


def require(cond: bool, msg: str) -> None:
  if not cond:
    raise ConfigError(msg)


def lookup(config, dotted: str):
  value = config
  for part in dotted.split("."):
    value = value[part]
  return value


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def check_positive(config, *keys: str) -> None:
  for key in keys:
    value = lookup(config, key)
    require(_is_int(value) and value > 0,
            f"config.{key} must be a positive integer, got {value!r}; set --config.{key}=N with N > 0")


def check_range(config, key: str, low=None, high=None, *, low_open=False, high_open=False,
                integer=False) -> None:
  """`config.key` is a number in [low, high] (open ends where asked)."""
  value = lookup(config, key)
  ok = isinstance(value, (int, float)) and not isinstance(value, bool)
  if integer:
    ok = ok and _is_int(value)
  if ok and low is not None:
    ok = value > low if low_open else value >= low
  if ok and high is not None:
    ok = value < high if high_open else value <= high
  if not ok:
    lo = "" if low is None else f"{'(' if low_open else '['}{low}"
    hi = "" if high is None else f"{high}{')' if high_open else ']'}"
    kind = "an integer" if integer else "a number"
    bounds = f" in {lo or '(-inf'}, {hi or 'inf)'}" if (lo or hi) else ""
    raise ConfigError(f"config.{key}={value!r} cannot work: it must be {kind}{bounds}")

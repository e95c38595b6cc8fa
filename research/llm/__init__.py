"""Pretrained causal LMs: load, score, generate; and the MetaICL-format evaluation.

One line each (the LM is always the first argument):

    from research import llm
    lm = llm.load("smollm2")               # or "tiny", FILE.gguf, an HF folder
    lm.model, lm.params, lm.tokenizer, lm.config
    llm.logprobs(lm, "Water boils at 100 degrees.")          # per-token log p
    llm.score_options(lm, "The capital of Italy is", [" Rome", " Paris"])
    llm.generate(lm, "What is the capital of France?")       # greedy, stops at EOS

Modules:
  lm.py         `LM`, `load` (weights cached per process), `logprobs`, `score_options`
  decoding.py   greedy / sampled decoding against the KV cache
  scoring.py    `Scorer`: option NLLs, prefix in the KV cache, metered FLOPs and time
  weights.py    HF safetensors and GGUF import into `models.llm.CausalLM`
  tokenizer.py  HF tokenizer.json, the BPE inside a GGUF, bytes (the tiny LM)
  defaults.py   the `model` config section (which LLM a config loads)
  bench.py      cost of scoring with and without a cached prefix
  metaicl/      MetaICL-format tasks, the offline suite, prompts, the registry of
                evaluation methods and the evaluation loop (ICL and MEND use it)
"""
from research.llm.decoding import generate
from research.llm.lm import LM, load, logprobs, score_options

__all__ = ["LM", "load", "logprobs", "score_options", "generate"]

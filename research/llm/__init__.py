"""Pretrained causal LMs: weight import (safetensors, GGUF), tokenizers, decoding, benchmarks."""

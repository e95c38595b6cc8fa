"""MEND: meta demonstration distillation (Li et al.) on any `models.llm.CausalLM`.

  losses.py     student/teacher forward passes, KL(teacher‖student), CE, L = CE + λ·KL
  data.py       token packing (demonstrations right-padded, left-truncated by whole
                demonstrations), the offline plain-text corpus, C4 via TFDS
  experiment.py trainer Experiments: "mend_pretrain" (stage 1), "mend_finetune" (stage 2)
  evaluate.py   "mend_eval" runner: zero-shot / ICL / prompt tuning / MEND variants,
                plus the efficiency table (FLOPs, latency, compression)
"""

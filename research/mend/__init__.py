"""MEND: meta demonstration distillation (Li et al.) on any `models.llm.CausalLM`.

  defaults.py   every key of the three tasks' configs, declared once
  losses.py     student/teacher forward passes, KL(teacher‖student), CE, L = CE + λ·KL
  data.py       token packing (demonstrations right-padded, left-truncated by whole
                demonstrations), the offline plain-text corpus, C4 via TFDS
  experiment.py trainer Experiments: "mend_pretrain" (stage 1), "mend_finetune" (stage 2)
  method.py     the evaluation method of a trained distiller ("mend_finetune" runs)
  evaluate.py   "mend_eval" runner: the shared MetaICL evaluation plus the efficiency
                table (FLOPs, latency, compression)

MEND imports only the core (`research.*`), `research.llm` and `models`: the ICL
baselines it is compared with are found through the method registry.
"""

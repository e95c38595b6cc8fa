"""In-context learning evaluation in MetaICL's format, shared by ICL and MEND.

  data.py          MetaICL's files: rows, k-shot files per seed, partitions, task types
  suite.py         the offline suite (26 tasks, 6 partitions; `python -m
                   research.llm.metaicl.suite --out DIR`)
  tfds_builder.py  TFDS builder `meta_icl` re-packing a MetaICL directory (array_record)
  prompts.py       MetaICL "direct" prompts, truncation, demonstration sampling
  results.py       metrics, aggregation over demonstration seeds (mean ± se, n), tables
  methods.py       the registry of evaluation methods (`METHODS`), `Task`, `Context`
  evaluation.py    the loop (`evaluate(lm, tasks, methods)`) and the runner body of
                   `icl_eval` / `mend_eval`
  defaults.py      the config sections every evaluation has

The methods themselves live with their papers (`research/icl/methods/`,
`research/mend/method.py`) and register here; nothing in this package imports them.
"""

"""ICL with the prompt re-encoded for every option: the same prompts and scores as
`icl`, the naive cost (the efficiency benchmark's other side)."""
from research.icl.methods import icl
from research.llm.metaicl.methods import METHODS


@METHODS.register("icl_nocache", needs=("demonstrations",), seed_dependent=True, run="never")
class ICLNoCache(icl.ICL):
  cache_prefix = False

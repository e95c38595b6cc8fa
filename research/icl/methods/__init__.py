"""ICL's evaluation methods, one file each, registered in
`research.llm.metaicl.methods.METHODS` (see there for what a method declares).

A new method is one new file here (or anywhere under `research/`) plus its name in a
config's `methods`; nothing else lists the names.
"""

"""Optimizers, one file each, registered in `research.optim.OPTIMIZERS`.

A new optimizer is a new file here with a function decorated by
`@OPTIMIZERS.register(name, hparams={key: default})`; its hyper-parameters join
every config's optimizer section (`research.config.optimizer_section`).
"""

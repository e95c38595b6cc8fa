r"""Chan et al. 2022 at CPU scale: burstiness and Zipf-distributed classes trade
in-context against in-weights learning.

Classes are mnist1d signals (each of 1024 train-split signals is the prototype of
one class, exemplars add per-pixel noise; 256 test-split signals make classes never
trained on). The 1024 classes carry 32 labels (a seeded random map, Reddy 2023's K
classes on L labels): with one label per class the small model never learns in
context at this scale (experiments/chan/README.md). Sequences: 8 context (exemplar,
label) pairs and a query, loss on the query only (research/families/bursty.py). The
default GPICL transformer (2 layers, d 64, query layout) trains on them; the final
table has the probes: `bursty/in_context` (trained classes given labels none of them
carries: only in-context learning answers), `bursty/holdout` (Chan's few-shot probe on
new classes) and `bursty/in_weights` (the query's class absent from the context: only
in-weights learning answers; `_zipf`: classes drawn as in training), with k-NN (k = 1
and √t), logistic regression and online SGD on the same sequences.

Command:
  python -m launch.main --config experiments/chan/bursty.py:p_bursty=0.9,zipf=1.0 --workdir runs/chan/p0.9_z1
  python -m launch.sweep experiments/chan/sweep_bursty.py --run   # the sweeps
Variants: `:learner=NAME` any registered GPICL learner (e.g. maml); `:classes=K`,
`:labels=L` (0: one label per class, Chan's setting), `:dataset=digits`; `:tiny` for tests.
Expected (p = 0.9, α = 0, 3 seeds, 3000 steps, ~3 min on the 2-core dev machine):
in-context probe 0.906 ± 0.010, holdout 0.947 ± 0.003, in-weights 0.451 ± 0.040 (chance 1/2,
1/2, 1/32). All measured settings: experiments/chan/README.md.
"""
from experiments import common
from research.gpicl import defaults


def get_config(arg=None):
  a = common.parse_arg(arg, tiny=False, learner="transformer", p_bursty=0.9, zipf=0.0,
                       classes=1024, labels=32, steps=0, seeds=3, batch=64, noise=0.3,
                       dataset="mnist1d", holdout=256)
  c = defaults.get_config(a.learner, "tiny" if a.tiny else "small")
  c.data.family = "bursty"
  c.data.seq_len = 9
  c.data.num_classes = a.labels or a.classes
  c.families.bursty.update(num_train_classes=a.classes, num_labels=a.labels, p_bursty=a.p_bursty,
                           zipf_exponent=a.zipf, within_class_std=a.noise, dataset=a.dataset,
                           num_holdout_classes=a.holdout)
  c.eval.datasets = ()
  c.eval.classical = ("knn1", "knn_sqrt", "logistic", "sgd")
  common.family_train(c, num_steps=a.steps or 3000, batch_size=a.batch, num_seeds=a.seeds,
                      tiny=a.tiny, tiny_steps=a.steps)
  if a.tiny:
    c.data.num_classes = 16
    c.families.bursty.update(num_train_classes=16, num_holdout_classes=4,
                             num_labels=min(a.labels, 8))
  return c.lock()

r"""Chan et al. 2022 at CPU scale: burstiness and Zipf-distributed classes trade
in-context against in-weights learning.

Classes are digits images (each of 256 train-split images is the prototype of one
class, exemplars add per-pixel noise; 64 test-split images make classes never
trained on), label = class index (256 outputs). Sequences: 8 context (exemplar,
label) pairs and a query, loss on the query only (research/families/bursty.py). The
default GPICL transformer (2 layers, d 64, query layout) trains on them; the final
table has the three probes: `bursty/in_context` (labels permuted within the context:
only in-context learning answers), `bursty/holdout` (Chan's few-shot probe on new
classes) and `bursty/in_weights` (the query's class absent from the context: only
in-weights learning answers), with k-NN and logistic regression on the same sequences.

Command:
  python -m launch.main --config experiments/chan/bursty.py:p_bursty=0.9,zipf=1.0 --workdir runs/chan/p0.9_z1
  python -m launch.sweep experiments/chan/sweep_bursty.py --run   # both sweeps
Variants: `:learner=NAME` any registered GPICL learner (e.g. maml); `:tiny` for tests.
`sgd` (GPICL's online-Adam learner, untrained) is on every curve beside the classical ones.
Measured: experiments/chan/README.md.
"""
from experiments import common
from research.gpicl import defaults


def get_config(arg=None):
  a = common.parse_arg(arg, tiny=False, learner="transformer", p_bursty=0.9, zipf=0.0, classes=256, steps=0, seeds=3,
                       batch=64, noise=0.3)
  c = defaults.get_config(a.learner, "tiny" if a.tiny else "small")
  c.data.family = "bursty"
  c.data.seq_len = 9
  c.data.num_classes = a.classes
  c.families.bursty.update(num_train_classes=a.classes, p_bursty=a.p_bursty,
                           zipf_exponent=a.zipf, within_class_std=a.noise)
  c.eval.datasets = ()
  c.eval.classical = ("knn1", "logistic", "sgd")
  common.family_train(c, num_steps=a.steps or 3000, batch_size=a.batch, num_seeds=a.seeds,
                      tiny=a.tiny, tiny_steps=a.steps)
  if a.tiny:
    c.data.num_classes = 16
    c.families.bursty.update(num_train_classes=16, num_holdout_classes=4)
  return c.lock()

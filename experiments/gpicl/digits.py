r"""GPICL on scikit-learn digits: the default experiment (`make train`).

Meta-trains a transformer on tasks made from the 8×8 digits (64 dims) by random
projections (std 1/√64) and label permutations, then evaluates the ICL curve on
seen tasks, unseen tasks (ids ≥ 2^30), the unprojected digits, and on wine,
breast_cancer, iris and mnist1d under unseen tasks (never trained on).

Layout: this default uses the "query" layout (each example's label in the same
token as its input; separate query tokens), not the paper's "label of the
previous example in the next token" layout: with the paper's layout alone the
loss stays on the ln 10 plateau for the whole CPU budget (up to 9353 steps
measured); experiments/gpicl/paper_layout_cpu.py adds the curriculum that gets it
off the plateau in ~5 min (experiments/gpicl/README.md). Select the paper's layout
with `:layout=paper`.

Command:
  python -m launch.main --config experiments/gpicl/digits.py --workdir runs/gpicl_digits
Variants:
  :tiny                      a few steps, for tests
  :layout=paper              the paper's token layout ("" = the learner's default:
                             query for the transformer, paper for LSTMs)
  :num_tasks=256             fewer tasks (task identification instead of learning)
  :learner=lstm              any registered learner (models/, `LEARNERS`)

Expected result (measured 2026-11-26 with `make train` on the 2-core dev machine,
load average ~6 from other jobs: 5 min 35 s wall, 6.1 steps/s, ~39 GFLOP/s): the
loss of ordinary tasks leaves ln 10 at step 650, the run ends in the
learning-to-learn phase; accuracy after 1 / 5 / 10 / 31 examples:
  seen      0.164 0.281 0.340 0.668      wine           0.309 0.758 0.805 0.891
  unseen    0.168 0.281 0.352 0.641      breast_cancer  0.434 0.684 0.738 0.801
  identity  0.098 0.336 0.473 0.680      iris           0.305 0.715 0.758 0.785
                                         mnist1d        0.129 0.098 0.121 0.219
(chance 0.1 for the 10-class sets, 1/3 for wine and iris, 1/2 for breast_cancer).
"""
from experiments import common
from research.gpicl import defaults


def get_config(arg=None):
  a = common.parse_arg(arg, tiny=False, layout="", num_tasks=2**16, seed=0, steps=0,
                       learner="transformer")
  c = defaults.get_config(a.learner, "tiny" if a.tiny else "small", a.layout)
  c.seed = a.seed
  c.tasks.num_tasks = a.num_tasks
  c.train.num_steps = a.steps or 2000
  if a.tiny:
    c.data.seq_len = 12
    common.tiny_train(c, num_steps=a.steps or 6, batch_size=16)
    c.eval.update(num_sequences=16, datasets=("wine",))
  return c.lock()

r"""Stretch target: the paper's token layout leaving the ln 10 plateau on the 2-core CPU.

The paper's layout puts y_{t-1} in token t, so reading an example's label needs
two attention hops (token j+1 holds y_j, token j holds x_j): at least 2 layers.
Intervention tried here, on top of the default digits task family (2^16 tasks):
a curriculum through the biased distribution — half of every batch comes from
a small pool of `bias_num_tasks` tasks (16) that share task 0's projection and
differ only in their label permutation (`shared_projection`), so they can only
be told apart by reading labels in the context: the model is meant to learn
label reading on an easy problem while the other half keeps the full task
distribution. Without the shared projection (`:shared_projection=False`) the
16 tasks are told apart by their input statistics alone, and a first run
memorised them without ever reading the context (README, stretch section).

  python -m launch.main --config experiments/gpicl/paper_layout_cpu.py --workdir runs/gpicl_paper_layout

Variants: `:tiny`; `:bias_num_tasks=1` is the paper's task-0 bias;
`:bias_fraction=0` switches the intervention off; `:shared_projection=False`; `:steps=N`.
Measured: see experiments/gpicl/README.md (stretch section).
"""
from experiments import common
from experiments.gpicl import digits


def get_config(arg=None):
  a = common.parse_arg(arg, tiny=False, bias_fraction=0.5, bias_num_tasks=16, steps=6000,
                       seq_len=20, batch_size=128, shared_projection=True)
  c = digits.get_config("layout=paper" + (",tiny" if a.tiny else ""))
  with c.unlocked():
    c.tasks.bias_fraction = a.bias_fraction
    c.tasks.bias_num_tasks = a.bias_num_tasks
    c.tasks.bias_shared_projection = a.shared_projection
    if not a.tiny:
      c.data.seq_len = a.seq_len
      c.train.update(num_steps=a.steps, batch_size=a.batch_size, log_every=50, eval_every=500,
                     checkpoint_every=500, tensorboard=False)
      c.eval.datasets = ("wine",)
  c.lock()
  return c

"""DKVB Fig. 2: the 2-D toy, class-incremental over 4 stages of 2 classes.

8 Gaussian blobs (std 0.035) in the unit square, stages {0,4},{1,5},{2,6},{3,7},
100 samples and 1000 full-batch steps per stage. Keys: 1000 EMA batches of 100
points from U[0,1]^2, then frozen. Models: linear probe (Adam 1e-2) and MLP
2-32-8 (Adam 1e-3), optimiser re-created each stage; DKVB 1 head × 400 keys
(identity) and 20 heads × 20 keys (random projection, d_key 2), d_v 8, voting
decoder, values 0.001·N(0,1), Adam 1e-3 on values (one optimiser for the whole
stream, as in the released notebook). Plain cross-entropy.

Command:
  python -m launch.main --config experiments/dkvb/toy2d.py --workdir runs/dkvb_toy2d
Measured (this command, 2-core shared CPU, seeds 0,1,2; final class-balanced accuracy):
  DKVB 1×400 100.0 ± 0.0 %, DKVB 20×20 99.7 ± 0.2 %, linear probe 25.0 ± 0.0 %,
  MLP 25.0 ± 0.0 % (official code: 25 / 25 / ≈ 99.8 %). `:tiny` (1 seed, 50 steps
  per stage) is a smoke test only.
"""
import ml_collections


def _dkvb(num_heads, num_keys, projection):
  return ml_collections.ConfigDict(dict(
      kind="dkvb", iid=False, num_heads=num_heads, num_keys=num_keys, dim_key=2,
      projection=projection, top_k=1, decoder="vote", value_init="normal",
      value_init_scale=1e-3, key_chunk=1024, optimizer="adam", lr=1e-3, grad_clip=0.0,
      reset_optimizer=False, epochs_per_task=0, bias=True, hidden=0,
      key_init=dict(method="ema", num_steps=1000, epochs=0, batch_size=100, decay=0.95,
                    eps=1e-5, dead_fraction=0.1, init_from_data=False, kmeans_iters=20)))


def _probe(kind, lr, hidden=0):
  return ml_collections.ConfigDict(dict(
      kind=kind, iid=False, optimizer="adam", lr=lr, grad_clip=0.0, reset_optimizer=True,
      epochs_per_task=0, bias=True, hidden=hidden))


def get_config(arg=None):
  arg = arg or ""
  c = ml_collections.ConfigDict()
  c.task = "dkvb"
  c.seeds = (0, 1, 2)
  c.only = ""
  c.save_grid = True
  c.tensorboard = False
  c.data = dict(name="toy2d", n_train=100, n_test=1000, key_init_source="uniform",
                data_dir="", max_examples=0, key_init_dataset="")
  c.encoder = dict(name="identity", dim=0, seed=0, cache_dir="")
  c.stream = dict(classes_per_task=2)
  # Full batch (batch_size 0): one epoch = one step.
  c.train = dict(epochs_per_task=1000, batch_size=0, label_smoothing=0.0, eval_every=0)
  c.models = dict(
      linear=_probe("linear", 1e-2),
      mlp=_probe("mlp", 1e-3, hidden=32),
      dkvb_1x400=_dkvb(1, 400, "identity"),
      dkvb_20x20=_dkvb(20, 20, "random"),
  )
  if "tiny" in arg:
    c.seeds = (0,)
    c.train.epochs_per_task = 50
    c.models.dkvb_1x400.key_init.num_steps = 50
    c.models.dkvb_20x20.key_init.num_steps = 50
  return c.lock()

"""DKVB on sklearn digits: class-incremental, 5 tasks × 2 classes, frozen encoders.

Offline stand-in for the paper's CIFAR10 protocol (same optimiser settings:
SGD, batch 256, label smoothing 0.1; DKVB values lr 0.3 with grad-clip 1.0;
baselines on the same embedding). Digits is split per seed into 50 % train,
25 % test and a 25 % unlabelled pool; keys (and PCA / random-feature encoders)
are fitted on that pool after transposing and flipping every image
(`data.key_init_source="transformed"`), i.e. on 8×8 glyphs that are not
upright digits: different data from the task, as the paper inits keys for
CIFAR10 on CIFAR100. `holdout` (same distribution) and `noise` are ablations.

Command:
  python -m launch.main --config experiments/dkvb/digits.py --workdir runs/dkvb_digits
  (variants, comma-separated: `:tiny`, `:epochs=100`, `:encoder=pca|pixels|random_relu|autoencoder`,
   `:heads=64`, `:keys=1024`, `:dkey=8`, `:init=holdout|noise`, `:blr=0.1`)
Measured (this command, 2-core shared CPU, seeds 0,1,2, final class-balanced accuracy
after task 5): DKVB 90.1 ± 0.9 %, DKVB i.i.d. 88.9 ± 1.7 %, linear probe 18.1 ± 1.2 %,
linear probe without bias 18.3 ± 1.0 %, MLP-128 18.6 ± 1.0 %. With `:encoder=autoencoder`
(a denoising MLP autoencoder pretrained in-framework on the unlabelled pool, 32-d):
DKVB 87.2 ± 1.6 %, DKVB i.i.d. 86.9 ± 1.5 %, linear probe 24.0 ± 2.1 %, without bias
25.4 ± 2.5 %, MLP-128 21.6 ± 3.1 % (`--workdir runs/dkvb/digits_autoencoder`). Other
encoders, epochs per task and ablations: experiments/dkvb/README.md. `:tiny` is a smoke
test only.
"""
import ml_collections


def _dkvb(iid=False, heads=256, keys=256, dkey=16):
  # key_init.epochs: EMA passes over the unlabelled pool in full batches (the paper: 10;
  # research.dkvb.keys.ema_num_steps), here 10 steps; key_init.num_steps > 0 overrides.
  return ml_collections.ConfigDict(dict(
      kind="dkvb", iid=iid, num_heads=heads, num_keys=keys, dim_key=dkey,
      projection="random", top_k=1, decoder="vote", value_init="zeros",
      value_init_scale=1e-3, key_chunk=1024, optimizer="sgd", lr=0.3, grad_clip=1.0,
      reset_optimizer=True, epochs_per_task=0, bias=True, hidden=0,
      key_init=dict(method="ema", num_steps=0, epochs=10, batch_size=256, decay=0.95,
                    eps=1e-5, dead_fraction=0.1, init_from_data=True, kmeans_iters=20)))


def _probe(kind, bias=True, hidden=0, iid=False, lr=1e-3):
  return ml_collections.ConfigDict(dict(
      kind=kind, iid=iid, optimizer="sgd", lr=lr, grad_clip=0.0, reset_optimizer=True,
      epochs_per_task=0, bias=bias, hidden=hidden))


def get_config(arg=None):
  args = dict(a.split("=", 1) if "=" in a else (a, "1") for a in (arg or "").split(",") if a)
  c = ml_collections.ConfigDict()
  c.task = "dkvb"
  c.seeds = (0, 1, 2)
  c.only = ""
  c.save_grid = False
  c.tensorboard = False
  c.data = dict(name="digits", n_train=0, n_test=0,
                key_init_source=args.get("init", "transformed"),
                data_dir="", max_examples=0, key_init_dataset="")
  # `autoencoder`: a denoising MLP autoencoder pretrained here on the unlabelled pool
  # (research/dkvb/pretrain.py); its parameters are cached in cache_dir or <workdir>/cache.
  c.encoder = dict(name=args.get("encoder", "pixels"), dim=32, seed=0, cache_dir="",
                   pretrain=dict(hidden=256, steps=3000, batch_size=128, lr=1e-3,
                                 weight_decay=1e-4, noise=0.3))
  c.stream = dict(classes_per_task=2)
  c.train = dict(epochs_per_task=int(args.get("epochs", 1000)), batch_size=256,
                 label_smoothing=0.1, eval_every=0)
  blr = float(args.get("blr", 1e-3))  # Baseline SGD lr (the paper's 1e-3 underfits digits).
  size = dict(heads=int(args.get("heads", 256)), keys=int(args.get("keys", 256)),
              dkey=int(args.get("dkey", 16)))
  c.models = dict(
      dkvb=_dkvb(**size),
      dkvb_iid=_dkvb(iid=True, **size),
      linear=_probe("linear", lr=blr),
      linear_nobias=_probe("linear", bias=False, lr=blr),
      mlp=_probe("mlp", hidden=128, lr=blr),
  )
  if "tiny" in args:
    c.seeds = (0,)
    c.train.epochs_per_task = 5
    c.encoder.pretrain.steps = 50
    for m in ("dkvb", "dkvb_iid"):
      c.models[m].num_heads = 16
      c.models[m].num_keys = 64
      c.models[m].key_init.epochs = 2
  return c.lock()

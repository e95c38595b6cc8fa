r"""Prepares TFDS datasets as array_record files, once, on a machine with internet.

  python -m research.data.prepare mnist fashion_mnist kmnist cifar10 svhn_cropped \
      [--data_dir ~/tensorflow_datasets]

Runs `tfds.builder(name, file_format="array_record").download_and_prepare()`
for each name. Afterwards training reads the files with `tfds.data_source`
(research/data/tfds.py) and never touches the network. Some TFDS builders need
TensorFlow to *prepare* (not to read); if one asks for it, install
`tensorflow-cpu` for this step only.
"""
from __future__ import annotations

import argparse
import sys

from research.data import manifest


def prepare(name: str, data_dir: str | None = None) -> str:
  """Downloads and prepares one dataset; returns the directory it landed in."""
  import tensorflow_datasets as tfds
  from research.data import tfds as tfds_data
  builder_name = tfds_data.DATASETS.get(name, name)
  builder = tfds.builder(builder_name, data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare()
  manifest.write(builder.data_dir)  # Checked on every load (research/data/tfds.py).
  return builder.data_dir


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("names", nargs="+", help="TFDS names (mnist, fashion_mnist, kmnist, cifar10, "
                 "svhn_cropped)")
  p.add_argument("--data_dir", default=None, help="TFDS data dir (default: $TFDS_DATA_DIR or "
                 "~/tensorflow_datasets)")
  args = p.parse_args(argv)
  for name in args.names:
    print(f"{name}: prepared in {prepare(name, args.data_dir)}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""The import contracts of `.importlinter`: launch -> experiments -> research -> models,
papers never import each other, the core never imports a paper, no cycles."""
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_contracts_are_kept():
  exe = shutil.which("lint-imports", path=os.path.dirname(sys.executable)) or "lint-imports"
  r = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                     env=dict(os.environ, PYTHONPATH=ROOT))
  assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
  assert "BROKEN" not in r.stdout

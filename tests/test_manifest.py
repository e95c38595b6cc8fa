"""Prepared data carries a checksum manifest that is verified on load."""
import pytest

from research.data import manifest

CMD = "python -m research.icl.suite --out DIR"


def test_manifest_roundtrip_and_detects_changes(tmp_path):
  d = tmp_path / "data"
  (d / "sub").mkdir(parents=True)
  (d / "a.jsonl").write_text('{"x": 1}\n')
  (d / "sub" / "b.jsonl").write_text('{"x": 2}\n')
  entries = manifest.write(str(d))
  assert set(entries) == {"a.jsonl", "sub/b.jsonl"}
  manifest.verify(str(d), CMD)  # Untouched: fine.
  (d / "sub" / "b.jsonl").write_text('{"x": 3}\n')
  with pytest.raises(manifest.DataError, match="b.jsonl.*checksum.*research.icl.suite"):
    manifest.verify(str(d), CMD)
  (d / "sub" / "b.jsonl").unlink()
  with pytest.raises(manifest.DataError, match="missing"):
    manifest.verify(str(d), CMD)


def test_missing_directory_or_manifest_names_the_command(tmp_path):
  with pytest.raises(manifest.DataError, match="not found.*research.icl.suite"):
    manifest.verify(str(tmp_path / "nope"), CMD)
  (tmp_path / "d").mkdir()
  with pytest.raises(manifest.DataError, match="no MANIFEST.json"):
    manifest.verify(str(tmp_path / "d"), CMD)

"""Prepared data carries a checksum manifest that is verified on load."""
import pytest

from research.data import manifest

CMD = "python -m research.llm.metaicl.suite --out DIR"


def test_manifest_roundtrip_and_detects_changes(tmp_path):
  d = tmp_path / "data"
  (d / "sub").mkdir(parents=True)
  (d / "a.jsonl").write_text('{"x": 1}\n')
  (d / "sub" / "b.jsonl").write_text('{"x": 2}\n')
  entries = manifest.write(str(d))
  assert set(entries) == {"a.jsonl", "sub/b.jsonl"}
  manifest.verify(str(d), CMD)  # Untouched: fine.
  (d / "sub" / "b.jsonl").write_text('{"x": 3}\n')
  with pytest.raises(manifest.DataError, match="b.jsonl.*checksum.*research.llm.metaicl.suite"):
    manifest.verify(str(d), CMD)
  (d / "sub" / "b.jsonl").unlink()
  with pytest.raises(manifest.DataError, match="missing"):
    manifest.verify(str(d), CMD)


def test_missing_directory_or_manifest_names_the_command(tmp_path):
  with pytest.raises(manifest.DataError, match="not found.*research.llm.metaicl.suite"):
    manifest.verify(str(tmp_path / "nope"), CMD)
  (tmp_path / "d").mkdir()
  with pytest.raises(manifest.DataError, match="no MANIFEST.json"):
    manifest.verify(str(tmp_path / "d"), CMD)


def test_offline_icl_suite_is_verified_on_load(tmp_path):
  from research.llm.metaicl import data as icl_data
  from research.llm.metaicl import suite
  out = str(tmp_path / "suite")
  task = "unicode_category"
  suite.write_suite(out, tasks=(task,))
  assert icl_data.load_task(out, task, "test")  # Verifies the manifest.
  path = icl_data.task_file(out, task, 16, 100, "test")
  with open(path, "a") as f:
    f.write('{"task": "x", "input": "tampered", "output": "a", "options": ["a", "b"]}\n')
  icl_data._VERIFIED.clear()
  with pytest.raises(manifest.DataError, match="checksum.*research.llm.metaicl.suite"):
    icl_data.load_task(out, task, "test")


def test_prepared_tfds_directory_is_verified(tmp_path):
  """research.data.prepare writes the manifest; reading a changed file fails."""
  import types
  from research.data import tfds as tfds_data
  d = tmp_path / "mnist" / "3.0.1"
  d.mkdir(parents=True)
  (d / "mnist-train.array_record-00000-of-00001").write_bytes(b"records")
  manifest.write(str(d))
  fake = types.SimpleNamespace(builder=lambda *a, **k: types.SimpleNamespace(data_dir=str(d)))
  tfds_data._verify_prepared(fake, "mnist", str(tmp_path))  # Intact: fine.
  tfds_data._VERIFIED.clear()
  (d / "mnist-train.array_record-00000-of-00001").write_bytes(b"recordz")
  with pytest.raises(manifest.DataError, match="research.data.prepare mnist"):
    tfds_data._verify_prepared(fake, "mnist", str(tmp_path))

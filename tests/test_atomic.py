"""pymeta.atomic: a file is its old version or the complete new one, never half-written."""

import os

import pytest

from pymeta.atomic import atomic_write, write_json_atomic


def test_atomic_write_leaves_old_file_or_new_file(tmp_path):
    target = tmp_path / "sub" / "a.json"
    write_json_atomic(target, {"x": 1})
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("crash while writing")
    assert target.read_text() == '{\n "x": 1\n}'
    assert os.listdir(tmp_path / "sub") == ["a.json"]
    with atomic_write(target) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path / "sub") and tmp.endswith(".json")
        with open(tmp, "w") as f:
            f.write("new")
    assert target.read_text() == "new" and os.listdir(tmp_path / "sub") == ["a.json"]

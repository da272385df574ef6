"""pymeta.atomic: a file is its old version or the complete new one, never half-written."""

import os
import stat

import pytest

from pymeta.atomic import atomic_write, write_json_atomic
from pymeta.config.checks import check_output_folders


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


def test_a_link_is_written_through_and_a_pipe_is_refused(tmp_path):
    """Renaming onto a path replaces what is there: a link would become a plain file (its target left
    as it was), and as root a device (`--output /dev/null` replaced /dev/null with the JSON)."""
    (tmp_path / "results").mkdir()
    real = tmp_path / "results" / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_json_atomic(link, {"x": 2})
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == '{\n "x": 2\n}' and sorted(os.listdir(tmp_path / "results")) == ["real.json"]

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path in (fifo, tmp_path / "to_pipe"):
        if path != fifo:
            path.symlink_to(fifo)
        with pytest.raises(ValueError, match=f"^cannot write to {path}: it is a device or a pipe, not a file"):
            write_json_atomic(path, {"x": 3})
        with pytest.raises(ValueError, match="it is a device or a pipe"):
            check_output_folders(str(path))
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and os.path.islink(tmp_path / "to_pipe")
    check_output_folders(str(link), str(tmp_path / "new" / "file.json"))  # a link to a file, a new path: fine

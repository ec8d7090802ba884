"""write_atomic: the file is either the old one or the whole new one."""
import pytest

from opttree_core.atomic import write_atomic


def test_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("old")
    assert write_atomic(path, lambda tmp: tmp.write_text("new")) == path
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("old")

    def half_then_fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(path, half_then_fail)
    assert path.read_text() == "old"


def test_safetensors_files_get_the_umask_mode_not_0600(tmp_path):
    import os

    import torch

    from opttree_core.atomic import save_tensors, umask_mode

    old = os.umask(0o022)
    try:
        path = save_tensors({"w": torch.zeros(2)}, tmp_path / "w.safetensors")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert umask_mode() == 0o666 & ~old

"""``train data --ray``: self-distillation answers and features made by Ray workers in shards are the
single-process cache byte for byte, and a rerun after an interruption redoes no finished shard."""
import socket

import pytest

from opttree_core.errors import OptTreeError
from opttree_core.tools.train import cli as train_cli
from opttree_core.tools.train import ray_data
from published_heads import save_target

ARGS = ["--n-gsm8k", "0", "--n-humaneval", "0", "--n-own", "6", "--max-new-tokens", "8", "--gen-batch", "2",
        "--feature-batch", "2", "--no-progress", "--device", "cpu"]
RAY = ["--ray", "--ray-workers", "2", "--shard-batches", "1"]  # 3 shards of answers, 3 of features


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    root = tmp_path_factory.mktemp("data-ray")
    target = save_target(root / "target", layers=2)
    assert train_cli.main(["data", "--target", str(target), "--data", str(root / "single"), *ARGS]) == 0
    return target, root / "single"


def files(folder) -> dict:
    """Every file of a data cache and its bytes, but the build times."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "wall_time.json"}


def test_ray_shards_write_the_single_process_cache_byte_for_byte(ray_cluster, single, tmp_path):
    target, expected = single
    assert train_cli.main(["data", "--target", str(target), "--data", str(tmp_path / "ray"), *ARGS, *RAY]) == 0
    made = files(tmp_path / "ray")
    assert set(made) == {"sequences.jsonl", "sequences.made-from.json", "features.pt", "token_counts.safetensors"}
    assert made == files(expected)  # no shard files left behind either


def test_a_rerun_redoes_no_finished_shard(ray_cluster, single, tmp_path, monkeypatch, capsys):
    """One worker, so shards finish in order. A finished shard of answers is in the answers file; one of
    features in its shard file until the whole features file is written. Reruns redo neither."""
    target, expected = single
    real_write, real_actor = ray_data.write_atomic, ray_data.RayData._actor
    saves, tasks = [], []

    def fail_on(suffix: str, n: int):
        def write(path, fill):
            saves.append(path.name)
            if path.suffix == suffix and sum(name.endswith(suffix) for name in saves) == n:
                raise OptTreeError(f"cannot write {path}: disk full")
            return real_write(path, fill)
        return write

    monkeypatch.setattr(ray_data.RayData, "_actor", lambda self, k: tasks.append(k) or real_actor(self, k))
    command = ["data", "--target", str(target), "--data", str(tmp_path / "ray"), *ARGS, *RAY[:2], "1", *RAY[3:]]
    data = tmp_path / "ray"
    monkeypatch.setattr(ray_data, "write_atomic", fail_on(".json", 2))  # the second shard of answers
    assert train_cli.main(command) == 2 and "disk full" in capsys.readouterr().err
    assert len((data / "sequences.jsonl").read_text().splitlines()) == 2 and len(tasks) == 3
    tasks.clear()
    monkeypatch.setattr(ray_data, "write_atomic", fail_on(".pt", 3))  # the third shard of features
    assert train_cli.main(command) == 2 and "disk full" in capsys.readouterr().err
    assert len(tasks) == 2 + 3 and len((data / "sequences.jsonl").read_text().splitlines()) == 6
    assert sorted(p.name for p in (data / "features.pt.shards").iterdir()) == ["0-2.pt", "2-4.pt"]
    tasks.clear()
    monkeypatch.setattr(ray_data, "write_atomic", real_write)
    assert train_cli.main(command) == 0
    assert len(tasks) == 1  # the third shard of features only
    assert files(data) == files(expected)


def test_a_bad_address_or_a_ray_flag_without_ray_is_one_line_before_anything_is_written(single, tmp_path, capsys):
    target, _ = single
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    for extra, needle in [(["--ray", f"127.0.0.1:{closed}"], "no Ray cluster answers there"),
                          (["--ray-workers", "2"], "--ray-workers and --ray-threads need --ray"),
                          (["--ray", "--ray-threads", "0"], "--ray-threads must be >= 1")]:
        code = train_cli.main(["data", "--target", str(target), "--data", str(tmp_path / "data"), *ARGS, *extra])
        err = capsys.readouterr().err
        assert code == 2 and needle in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []

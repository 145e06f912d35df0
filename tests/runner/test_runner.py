"""Tests for the one part runner (python_udfs.runner): reuse, recompute, cleanup, failures, executors."""

from __future__ import annotations

import functools
import multiprocessing
import pickle
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from python_udfs.runner.executors import (
    LocalExecutor,
    PartFailed,
    PartResult,
    build_worker,
    compute_part,
    get_executor,
)
from python_udfs.runner.parts import FINGERPRINT_KEY, existing_fingerprint, write_atomic
from python_udfs.runner.run import RunStats, run_step
from python_udfs.runner.step import Part, Step, digest_rows, split_rows

N, PART = 23, 5  # five parts: 5, 5, 5, 5, 3 rows

BUILDS: list[int] = []  # one entry per worker built in this process
CALLS: list[list[int]] = []  # the ids each worker call saw


def scale(rows: pa.Table, factor: int, fail_on: int | None = None) -> pa.Table:
    """The step under test: x -> x * factor, per row, keyed by id."""
    ids = rows.column("id").to_pylist()
    CALLS.append(ids)
    if fail_on is not None and fail_on in ids:
        raise ValueError(f"cannot scale id {fail_on}")
    return pa.table({"id": rows.column("id"),
                     "y": pa.array([x * factor for x in rows.column("x").to_pylist()], pa.int64())})


def make_scaler(factor: int, fail_on: int | None = None):
    BUILDS.append(factor)
    return functools.partial(scale, factor=factor, fail_on=fail_on)


def broken_maker():
    raise OSError("model weights not found")


@pytest.fixture(autouse=True)
def fresh_log():
    BUILDS.clear()
    CALLS.clear()


def table(n: int = N, changed: dict[int, int] | None = None) -> pa.Table:
    xs = [(changed or {}).get(i, 10 * i) for i in range(n)]
    return pa.table({"id": pa.array(range(n), pa.int64()), "x": pa.array(xs, pa.int64()),
                     "text": [f"row {i} é" for i in range(n)]})


def batches(t: pa.Table, sizes: Iterable[int] = (2, 7, 1, 9, 100)) -> list[pa.RecordBatch]:
    out, start = [], 0
    for size in sizes:
        if start >= t.num_rows:
            break
        out.extend(t.slice(start, size).to_batches())
        start += size
    return out


def step(out: Path, factor: int = 3, fail_on: int | None = None, **kwargs) -> Step:
    return Step(name="scale", out_dir=out, settings={"factor": factor},
                make_worker=functools.partial(make_scaler, factor, fail_on), unit="row", **kwargs)


def run(out: Path, t: pa.Table | None = None, executor=None, **kwargs) -> RunStats:
    t = table() if t is None else t
    return run_step(step(out, **kwargs), split_rows(batches(t), PART, columns=["id", "x"]),
                    executor=executor, total=t.num_rows, progress=False)


def read(out: Path) -> list[tuple[int, int]]:
    got = pq.read_table(sorted(out.glob("part-*.parquet"))).to_pylist()
    return [(r["id"], r["y"]) for r in got]


def mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in out.iterdir()}


def names(n: int) -> list[str]:
    return [f"part-{i:06d}.parquet" for i in range(n)]


# --- split_rows and digests --------------------------------------------------------------

def test_split_rows_cuts_exact_parts_whatever_the_batches() -> None:
    t = table()
    for sizes in [(1,) * N, (N,), (2, 7, 1, 9, 100), (5, 5, 5, 5, 5), (4, 0, 6, 13)]:
        parts = list(split_rows(batches(t, sizes), PART))
        assert [p.index for p in parts] == list(range(5))
        assert [p.size for p in parts] == [p.rows.num_rows for p in parts] == [5, 5, 5, 5, 3]
        assert pa.concat_tables([p.rows for p in parts]).equals(t)
    assert list(split_rows([], PART)) == []
    with pytest.raises(ValueError, match="part_size must be positive"):
        list(split_rows(batches(t), 0))


def varied_table() -> pa.Table:
    """Every column kind the digest handles, with nulls and multi-byte text."""
    n = 40
    return pa.table({
        "id": pa.array(range(n), pa.int64()),
        "f": pa.array([None if i % 7 == 3 else i / 3 for i in range(n)], pa.float32()),
        "flag": pa.array([i % 3 == 0 for i in range(n)]),
        "text": pa.array([None if i % 5 == 1 else "ü" * (i % 4) + str(i) for i in range(n)]),
        "big": pa.array([f"large {i}" for i in range(n)], pa.large_string()),
        "tokens": pa.array([None if i % 9 == 4 else list(range(i % 6)) for i in range(n)],
                           pa.list_(pa.uint16())),
        "meta": pa.array([{"k": i} for i in range(n)]),  # a struct: the generic path
    })


def test_digests_depend_on_values_not_chunking_or_slicing() -> None:
    t = varied_table()
    expected = [p.content for p in split_rows(t.to_batches(), 8)]
    assert len(set(expected)) == 5
    for sizes in [(1,) * 40, (3, 17, 1, 19), (8,) * 5, (39, 1)]:
        assert [p.content for p in split_rows(batches(t, sizes), 8)] == expected
    # a slice of a bigger table (non-zero offsets in every buffer) digests like a fresh copy
    padded = pa.concat_tables([t.slice(0, 5), t, t.slice(0, 3)]).combine_chunks()
    sliced = padded.slice(5, 40)
    assert digest_rows(sliced) == digest_rows(t) == digest_rows(pa.Table.from_pylist(t.to_pylist(), t.schema))
    assert digest_rows(sliced.slice(16, 8)) == expected[2]
    # any changed value, or a null where a value was, changes the digest
    for column, value in [("f", 99.0), ("flag", True), ("text", "other"), ("big", "x"), ("tokens", [7]),
                          ("meta", {"k": -1}), ("text", None)]:
        rows = t.to_pylist()
        rows[20][column] = value
        changed = pa.Table.from_pylist(rows, t.schema)
        got = [p.content for p in split_rows(changed.to_batches(), 8)]
        assert got[2] != expected[2] and got[:2] + got[3:] == expected[:2] + expected[3:], column
    # columns= limits what the digest covers
    rows = t.to_pylist()
    rows[0]["text"] = "ignored"
    other = pa.Table.from_pylist(rows, t.schema)
    assert digest_rows(other, ["id", "f"]) == digest_rows(t, ["id", "f"])
    assert digest_rows(other) != digest_rows(t)


# --- reuse and recompute -----------------------------------------------------------------

def test_first_run_computes_every_part_with_one_worker(tmp_path: Path) -> None:
    out = tmp_path / "out"
    stats = run(out)
    assert (stats.parts, stats.computed_parts, stats.reused_parts, stats.computed, stats.reused) == (5, 5, 0, N, 0)
    assert sorted(p.name for p in out.iterdir()) == names(5)
    assert read(out) == [(i, 30 * i) for i in range(N)]
    assert BUILDS == [3] and len(CALLS) == 5
    assert stats.paths == [out / name for name in names(5)] and stats.indices == list(range(5))
    fingerprint = pq.read_schema(out / names(5)[0]).metadata[FINGERPRINT_KEY].decode()
    assert stats.fingerprints[0] == fingerprint and len(set(stats.fingerprints)) == 5
    manifest = stats.manifest().to_pylist()
    assert [(m["part_index"], m["n_rows"]) for m in manifest] == [(0, 5), (1, 5), (2, 5), (3, 5), (4, 3)]
    assert manifest[0] == {"part_index": 0, "path": str(out / names(5)[0]), "n_rows": 5, "fingerprint": fingerprint}
    assert stats["computed"] == N  # the older dict-style access still works


def test_rerun_reuses_every_part_without_building_a_worker(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run(out)
    before = mtimes(out)
    BUILDS.clear()
    again = run(out, t=table(), executor="local")
    assert (again.computed_parts, again.reused_parts, again.computed, again.reused) == (0, 5, 0, N)
    assert BUILDS == [] and mtimes(out) == before
    assert again.fingerprints == first.fingerprints
    assert again.manifest().equals(first.manifest())


def test_changed_row_recomputes_only_its_part(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(out)
    before = mtimes(out)
    CALLS.clear()
    stats = run(out, t=table(changed={12: -1}))
    assert (stats.computed_parts, stats.reused_parts, stats.computed, stats.reused) == (1, 4, 5, N - 5)
    assert CALLS == [[10, 11, 12, 13, 14]]
    after = mtimes(out)
    assert {name for name in after if after[name] != before[name]} == {names(5)[2]}
    assert dict(read(out))[12] == -3


def test_changed_setting_recomputes_every_part(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(out)
    stats = run(out, factor=4)
    assert (stats.computed_parts, stats.reused_parts) == (5, 0)
    assert read(out) == [(i, 40 * i) for i in range(N)]


def test_shorter_input_removes_stale_parts_and_temporaries(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(out)
    (out / "part-000001.parquet.4242-deadbeef.tmp").write_bytes(b"torn by a kill")
    (out / "part-000009.parquet.77.tmp").write_bytes(b"torn by a kill")
    (out / "manifest.parquet").write_bytes(b"not a part: left alone")
    stats = run(out, t=table(12))  # parts 0, 1 unchanged; part 2 now 2 rows; parts 3, 4 stale
    assert (stats.parts, stats.computed_parts, stats.reused_parts) == (3, 1, 2)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.parquet", *names(3)]
    assert read(out) == [(i, 30 * i) for i in range(12)]


def test_empty_input_removes_every_part(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(out)
    stats = run(out, t=table(0))
    assert stats.parts == 0 and list(out.iterdir()) == [] and BUILDS == [3]
    assert stats.manifest().num_rows == 0


def test_keep_stale_leaves_parts_past_the_end(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(out)
    run_step(step(out, keep_stale=True), split_rows(batches(table(7)), PART, columns=["id", "x"]), progress=False)
    assert sorted(p.name for p in out.iterdir()) == names(5)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "no_fingerprint"])
def test_torn_or_foreign_part_is_recomputed(tmp_path: Path, damage: str) -> None:
    out = tmp_path / "out"
    run(out)
    part = out / names(5)[3]
    if damage == "garbage":
        part.write_bytes(b"this is not a parquet file at all")
    elif damage == "truncated":
        part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    elif damage == "empty":
        part.write_bytes(b"")
    else:  # a whole parquet file that is not one of ours
        pq.write_table(pq.read_table(part).replace_schema_metadata(None), part)
    assert existing_fingerprint(part) is None
    CALLS.clear()
    stats = run(out)
    assert (stats.computed_parts, stats.reused_parts) == (1, 4)
    assert CALLS == [[15, 16, 17, 18, 19]]
    assert read(out) == [(i, 30 * i) for i in range(N)]


# --- failures ----------------------------------------------------------------------------

def test_failing_part_names_step_part_and_file_and_finished_parts_survive(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(PartFailed) as failed:
        run(out, fail_on=17)
    err = failed.value
    assert (err.step, err.index, err.path) == ("scale", 3, out / names(5)[3])
    assert str(err) == f"step 'scale': part 3 -> {out / names(5)[3]} failed: ValueError: cannot scale id 17"
    assert isinstance(err.__cause__, ValueError)
    assert sorted(p.name for p in out.iterdir()) == names(3)  # finished parts stay, nothing torn
    finished = mtimes(out)

    CALLS.clear()
    stats = run(out)  # fixed: only the failed part and the ones after it are computed
    assert (stats.computed_parts, stats.reused_parts) == (2, 3)
    assert CALLS == [[15, 16, 17, 18, 19], [20, 21, 22]]
    assert {k: v for k, v in mtimes(out).items() if k in finished} == finished
    assert read(out) == [(i, 30 * i) for i in range(N)]


def test_part_failed_pickles_with_its_fields(tmp_path: Path) -> None:
    err = PartFailed("embed", 7, tmp_path / "part-000007.parquet", "RuntimeError: CUDA out of memory")
    back = pickle.loads(pickle.dumps(err))
    assert (back.step, back.index, back.path, back.reason, str(back)) == (
        err.step, err.index, err.path, err.reason, str(err))


def test_worker_that_cannot_be_built_names_the_part(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(out, t=table(10))
    broken = Step(name="scale", out_dir=out, settings={"factor": 3}, make_worker=broken_maker)
    parts = split_rows(batches(table()), PART, columns=["id", "x"])
    with pytest.raises(PartFailed, match=r"step 'scale': part 2 -> .*part-000002.parquet failed: building the worker: "
                                         r"OSError: model weights not found"):
        run_step(broken, parts, progress=False)
    # every part up to date: the broken maker is never called
    stats = run_step(broken, split_rows(batches(table(10)), PART, columns=["id", "x"]), progress=False)
    assert stats.reused_parts == 2


def test_worker_returning_no_table_is_a_clear_error(tmp_path: Path) -> None:
    bad = Step(name="bad", out_dir=tmp_path, settings={}, make_worker=functools.partial(functools.partial, len))
    with pytest.raises(PartFailed, match="the worker returned int, not a pyarrow.Table"):
        run_step(bad, split_rows(batches(table()), PART), progress=False)
    assert not list(tmp_path.iterdir())


def test_part_indices_must_increase(tmp_path: Path) -> None:
    t = table(4)
    parts = [Part(index=1, content="a", rows=t), Part(index=1, content="b", rows=t)]
    with pytest.raises(ValueError, match=r"part indices must increase \(1 after 1\)"):
        run_step(step(tmp_path), parts, progress=False)


def test_part_needs_rows_or_a_loader(tmp_path: Path) -> None:
    with pytest.raises(PartFailed, match="part 0 has neither rows nor a loader"):
        run_step(step(tmp_path), [Part(index=0, content="x")], progress=False)


def test_unknown_executor_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown executor 'slurm': choose one of local"):
        get_executor("slurm")
    assert get_executor(None).name == get_executor("").name == get_executor("local").name == "local"
    mine = LocalExecutor()
    assert get_executor(mine) is mine


# --- executors ---------------------------------------------------------------------------

class ReversedExecutor:
    """Takes every part first, then finishes them last to first (as a cluster might)."""

    name = "reversed"

    def __init__(self) -> None:
        self.closed = False

    def run(self, step: Step, todo: Iterable[tuple[Part, str]]) -> Iterator[PartResult]:
        jobs = list(todo)
        worker = build_worker(step, jobs[0][0]) if jobs else None
        for part, fingerprint in reversed(jobs):
            yield compute_part(worker, step, part, fingerprint)

    def close(self) -> None:
        self.closed = True


class LosingExecutor(ReversedExecutor):
    """Drops the first part: the runner must notice."""

    name = "losing"

    def run(self, step: Step, todo: Iterable[tuple[Part, str]]) -> Iterator[PartResult]:
        jobs = list(todo)[1:]
        yield from super().run(step, jobs)


def test_parts_finished_out_of_order_give_the_same_files(tmp_path: Path) -> None:
    run(tmp_path / "local")
    executor = ReversedExecutor()
    stats = run(tmp_path / "reversed", executor=executor)
    assert stats.executor == "reversed" and stats.computed_parts == 5 and not executor.closed
    for name in names(5):
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "reversed" / name).read_bytes()
    # parts written by one executor are reused by another
    again = run(tmp_path / "reversed", executor="local")
    assert again.reused_parts == 5


def test_an_executor_that_loses_a_part_fails_the_step(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(PartFailed, match=r"part 0 .* executor 'losing' returned no result for parts \[0\]"):
        run(out, executor=LosingExecutor())
    assert sorted(p.name for p in out.iterdir()) == names(5)[1:]  # stale cleanup did not run either


_POOL_WORKER = None


def _pool_init(step_: Step) -> None:
    global _POOL_WORKER
    _POOL_WORKER = step_.make_worker()


def _pool_compute(step_: Step, part: Part, fingerprint: str) -> tuple[PartResult, int]:
    return compute_part(_POOL_WORKER, step_, part, fingerprint), len(BUILDS)


class ProcessExecutor:
    """Parts computed in two fresh processes, each building its worker once (the Ray design)."""

    name = "processes"

    def __init__(self) -> None:
        self.builds: list[int] = []

    def run(self, step: Step, todo: Iterable[tuple[Part, str]]) -> Iterator[PartResult]:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(2, mp_context=context, initializer=_pool_init, initargs=(step,)) as pool:
            running = set()
            for part, fingerprint in todo:
                running.add(pool.submit(_pool_compute, step, part, fingerprint))
                if len(running) >= 3:  # bounded: a Pile-sized todo is pulled, never listed
                    done, running = wait(running, return_when=FIRST_COMPLETED)
                    yield from self._results(done)
            yield from self._results(running)

    def _results(self, futures) -> Iterator[PartResult]:
        for future in futures:
            result, builds = future.result()
            self.builds.append(builds)
            yield result

    def close(self) -> None:
        pass


def test_parts_computed_in_other_processes_pickle_and_match(tmp_path: Path) -> None:
    run(tmp_path / "local")
    executor = ProcessExecutor()
    stats = run(tmp_path / "pool", executor=executor)
    assert stats.computed_parts == 5 and stats.computed == N
    assert max(executor.builds) == 1  # each process built its worker once, for all its parts
    for name in names(5):
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "pool" / name).read_bytes()


# --- atomic writes -----------------------------------------------------------------------

def test_write_atomic_streams_batches_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    t = table()
    path = tmp_path / "part-000000.parquet"
    reader = pa.RecordBatchReader.from_batches(t.schema, batches(t, (10, 10, 3)))
    assert write_atomic(reader, path, "abc", {"note": "streamed"}) == N
    parquet = pq.ParquetFile(path)
    assert parquet.metadata.num_row_groups == 3 and pq.read_table(path).equals(t.replace_schema_metadata(
        pq.read_schema(path).metadata))
    assert existing_fingerprint(path) == "abc" and parquet.schema_arrow.metadata[b"note"] == b"streamed"

    def broken() -> Iterator[pa.RecordBatch]:
        yield t.to_batches()[0]
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(pa.RecordBatchReader.from_batches(t.schema, broken()), tmp_path / "part-000001.parquet", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-000000.parquet"]

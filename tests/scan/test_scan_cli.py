"""Tests for the prompt scan's command line (python_udfs.scan.cli, ``python -m python_udfs.scan``)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from python_udfs.scan.cli import main  # noqa: E402


def test_cli_scans_a_slice_of_the_warehouse(tiny, texts, tmp_path, capsys):
    import duckdb

    db = tmp_path / "wh.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("create table documents as select * from (values (1, 'BBC News', ?), (2, 'Wikipedia', ?), "
                    "(3, 'BBC News', ?)) t(doc_id, source, text)", [texts[4], texts[0], texts[2]])
        con.execute("create table cluster_assignments as select * from (values (1, 4), (2, 5), (3, 4)) "
                    "t(doc_id, cluster_id)")
    base = ["--model", tiny.source, "--device", "cpu", "--db", str(db), "--lake", str(tmp_path / "lake")]
    argv = [*base, "--where", "d.source = 'BBC News'", "--docs", "0", "--min-p-long", "-1", "--min-js", "-1",
            "--show", "3"]
    main(argv)
    out = capsys.readouterr().out
    assert "2 documents in 1 parts (0 reused)" in out and "dbt build --select tag:scan" in out
    rows = pq.read_table(tmp_path / "lake" / "scan" / "tiny-neox" / "part-000000.parquet").to_pylist()
    assert {r["doc_id"] for r in rows} == {1, 3} and {r["cluster_id"] for r in rows} == {4}
    main(argv)  # again: the part is reused, nothing scanned
    assert "2 documents in 1 parts (1 reused), 0 windows scanned now, 0 kept" in capsys.readouterr().out

    with pytest.raises(SystemExit):
        main([*base, "--where", "d.source = 'nowhere'"])
    assert "no documents match --where" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--db", str(tmp_path / "missing.duckdb")])
    assert "run `make minipile` first" in capsys.readouterr().err

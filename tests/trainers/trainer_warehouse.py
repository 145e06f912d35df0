"""The trainer tests' warehouse: real sample text, `documents`, `minipile` and `document_tokens`."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from python_udfs.corpus.sample import iter_sample_records
from python_udfs.ngrams import tokenizer as neox


def write_token_part(doc_ids: list[int], texts: list[str], path: Path) -> Path:
    """One parquet part of document_tokens (doc_id, n_tokens, tokens), as the catalog writes
    it: the real GPT-NeoX ids from encode_batch, no EOS."""
    arrays = neox.encode_batch(texts)
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({
        "doc_id": pa.array(doc_ids, pa.int64()),
        "n_tokens": pa.array(lengths, pa.int32()),
        "tokens": pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(arrays), pa.uint16())),
    }), path)
    return path


def create_tokens_view(con: duckdb.DuckDBPyConnection, parts: str, where: str = "true") -> None:
    """document_tokens as models/marts/ngrams/document_tokens.sql defines it (a view over parts)."""
    con.execute(f"""
        create or replace view document_tokens as
        select doc_id, n_tokens, tokens::usmallint[] as tokens
        from read_parquet('{parts}') where {where}
    """)


def build_warehouse(path: Path) -> None:
    """60 documents (15 per sample source); minipile takes 48 of them: 36/6/6 train/val/test;
    two sampling variants in minipile_variant_documents (create_variants).

    document_tokens covers every document (ngram_source: documents, the default); its parts
    lie in a lake folder next to the warehouse file.
    """
    records = list(iter_sample_records(per_source=15))
    rows = [(i, r["meta"]["pile_set_name"], r["text"]) for i, r in enumerate(records)]
    part = write_token_part([i for i, _, _ in rows], [t for _, _, t in rows],
                            path.parent / "lake" / "tokens" / "documents" / "part-000000.parquet")
    with duckdb.connect(str(path)) as con:
        con.execute("create table documents (doc_id bigint, source varchar, text varchar)")
        con.executemany("insert into documents values (?, ?, ?)", rows)
        con.execute("""
            create table minipile as
            select doc_id,
                   case when n < 36 then 'train' when n < 42 then 'validation' else 'test' end
                       as split,
                   doc_id % 5 as cluster_id, source, text
            from (select *, row_number() over (order by md5(doc_id::varchar)) - 1 as n
                  from documents)
            where n < 48
        """)
        create_variants(con)
        con.execute("""create table cluster_assignments as
                       select doc_id, (doc_id % 5)::integer as cluster_id, 0.0::double as distance
                       from documents""")
        create_tokens_view(con, str(part.parent / "part-*.parquet"))


def create_variants(con: duckdb.DuckDBPyConnection) -> None:
    """minipile_variant_documents as the variants mart defines it (variant, doc_id, split,
    cluster_id): `uniform` takes documents 0-39 of the md5 order, `density` 8-49 (24/8/8 and
    26/8/8 train/validation/test), so 10 documents are in no variant and not in minipile."""
    con.execute("""
        create or replace table minipile_variant_documents as
        with ranked as (
            select doc_id, row_number() over (order by md5(doc_id::varchar)) - 1 as n
            from documents
        ),
        picked as (
            select 'uniform' as variant, doc_id, n - 0 as k from ranked where n < 40
            union all
            select 'density', doc_id, n - 8 from ranked where n >= 8 and n < 50
        )
        select variant, doc_id::bigint as doc_id,
               case when k < 8 then 'validation' when k < 16 then 'test' else 'train' end as split,
               (doc_id % 5)::integer as cluster_id
        from picked
    """)

{{ config(materialized='view') }}
-- depends_on: {{ ref('int_ngram_counts') }}

-- One row per distinct (id0, id1, id2) inside a sequence, with its exact count.

select
    id0,
    id1,
    id2,
    count,
from read_parquet('{{ ngram_dir() }}/counts/n=3/part-*.parquet')

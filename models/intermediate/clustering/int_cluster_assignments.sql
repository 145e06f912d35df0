{{ config(materialized='view') }}
-- depends_on: {{ ref('int_documents_clustered') }}

-- One row per document: its nearest centroid and the cosine distance to it, read from the
-- lake's assignment parts (int_documents_clustered writes them).

with parts as (

    select * from read_parquet('{{ lake_path("assignments") | trim }}/part-*.parquet')

),

final as (

    select
        doc_id,
        cluster_id,
        distance,
    from parts

)

select * from final

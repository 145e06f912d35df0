{{ config(materialized='view') }}
-- depends_on: {{ ref('int_documents_embedded') }}

-- One row per document: its L2-normalised embedding, read from the lake's embedding parts
-- (int_documents_embedded writes them). The vectors the clustering reads.

with parts as (

    select * from read_parquet('{{ lake_path("embeddings") | trim }}/part-*.parquet')

),

final as (

    select
        doc_id,
        embedding::float[] as embedding,
        '{{ var("embedding_model") | replace("'", "''") }}' as model,
    from parts

)

select * from final

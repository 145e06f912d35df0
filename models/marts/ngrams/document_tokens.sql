{{ config(materialized='view') }}
-- depends_on: {{ ref('int_documents_tokenized') }}

-- One row per tokenized document: its GPT-NeoX ids (no EOS), read from the lake's parts.

with parts as (

    select * from read_parquet('{{ lake_path('tokens') }}/part-*.parquet')

),

final as (

    select
        doc_id,
        n_tokens,
        tokens::usmallint[] as tokens,
    from parts

)

select * from final

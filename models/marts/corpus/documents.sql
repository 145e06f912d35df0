{{ config(materialized='view') }}

-- A view over the lake's corpus parts (through staging): the text stays in parquet.

with documents as (

    select * from {{ ref('stg_lake__documents') }}

),

final as (

    select
        doc_id,
        source,
        text,
        length(text)::integer as n_chars,
        meta,
        source_file,
        record_number,
    from documents

)

select * from final

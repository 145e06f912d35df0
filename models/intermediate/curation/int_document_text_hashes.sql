-- One row per document: the 64-bit hash of its normalised text (NFKC, casefold, whitespace
-- runs collapsed to one space, trimmed; python_udfs/curation/normalise.py through the UDF
-- pilehouse_text_hash). Always built (cheap): exact dedup groups by it, and a sample's
-- duplicates left are counted with it.

with documents as (

    select * from {{ ref('stg_lake__documents') }}

),

final as (

    select
        doc_id,
        pilehouse_text_hash(text) as text_hash,
    from documents

)

select * from final

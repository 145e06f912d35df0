-- One row per document whose normalised text another document with a smaller doc_id also
-- has: the candidates exact dedup removes, whether or not `exact_dedup` is on (cheap; the
-- exact_duplicates mart lists them only when it is). duplicate_of is the group's smallest doc_id.

with hashes as (

    select * from {{ ref('int_document_text_hashes') }}

),

grouped as (

    select
        doc_id,
        text_hash,
        min(doc_id) over (partition by text_hash) as duplicate_of,
        count(*) over (partition by text_hash) as group_size,
    from hashes

),

final as (

    select
        doc_id,
        duplicate_of,
        text_hash,
        group_size,
    from grouped
    where doc_id <> duplicate_of

)

select * from final
order by doc_id

-- One row per document exact dedup removed: its normalised text (NFKC, casefold, whitespace
-- collapsed, trimmed) equals that of a document with a smaller doc_id, duplicate_of the
-- smallest. Empty while `exact_dedup` is false (int_exact_duplicates lists the candidates).

with candidates as (

    select * from {{ ref('int_exact_duplicates') }}

),

final as (

    select
        doc_id,
        duplicate_of,
        text_hash,
        group_size,
    from candidates
    where {{ var('exact_dedup') }}

)

select * from final
order by doc_id

-- One row per document SemDeDup removed (empty while semdedup_eps is null).

with duplicates as (

    select * from {{ ref('int_semantic_duplicates') }}

),

final as (

    select
        doc_id,
        duplicate_of,
        similarity,
        cluster_id,
        nearest_earlier,
        similarity_to_kept,
        keep_rank,
    from duplicates

)

select * from final
order by cluster_id, keep_rank

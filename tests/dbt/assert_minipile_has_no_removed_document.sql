-- No minipile document is removed by an enabled curation step (the steps' intermediates,
-- filtered by their vars, as int_documents_eligible reads them).

with minipile as (

    select * from {{ ref('minipile') }}

),

exact_duplicates as (

    select * from {{ ref('int_exact_duplicates') }}

),

semantic_duplicates as (

    select * from {{ ref('int_semantic_duplicates') }}

),

contaminated as (

    select * from {{ ref('int_contaminated_documents') }}

),

removed as (

    select doc_id, 'exact_duplicates' as removed_by from exact_duplicates where {{ var('exact_dedup') }}
    union all
    select doc_id, 'semantic_duplicates' from semantic_duplicates
    union all
    select doc_id, 'contaminated_documents' from contaminated where {{ var('decontaminate') }}

),

final as (

    select
        minipile.doc_id,
        removed.removed_by,
    from minipile
    inner join removed
        on minipile.doc_id = removed.doc_id

)

select * from final

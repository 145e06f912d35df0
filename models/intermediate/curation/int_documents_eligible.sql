-- One row per document sampling may draw from: int_cluster_assignments minus what the
-- enabled curation steps removed (exact_dedup, semdedup_eps, decontaminate). With every step
-- off it is int_cluster_assignments itself, so minipile is unchanged.
-- int_semantic_duplicates and int_contaminated_documents are empty while their step is off.

with assignments as (

    select * from {{ ref('int_cluster_assignments') }}

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

    select doc_id from exact_duplicates where {{ var('exact_dedup') }}
    union
    select doc_id from semantic_duplicates
    union
    select doc_id from contaminated where {{ var('decontaminate') }}

),

final as (

    select
        assignments.doc_id,
        assignments.cluster_id,
        assignments.distance,
    from assignments
    anti join removed
        on assignments.doc_id = removed.doc_id

)

select * from final

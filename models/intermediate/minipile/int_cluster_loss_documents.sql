-- One row per document a reference LM scores for loss_informed sampling: inside each kept
-- cluster, the `lossi_docs_per_cluster` documents with the smallest seeded hash of doc_id
-- (a hash of its own, so not the same documents MiniPile then takes first). A view:
-- computed only when int_cluster_losses reads it, i.e. when loss_informed is in use.

with assignments as (

    select * from {{ ref('int_cluster_assignments') }}

),

exclusions as (

    select * from {{ ref('cluster_exclusions') }}

),

documents as (

    select * from {{ ref('stg_lake__documents') }}

),

ranked as (

    select
        assignments.doc_id,
        assignments.cluster_id,
        row_number() over (
            partition by assignments.cluster_id
            order by md5('lossi:{{ var("seed") }}:' || assignments.doc_id::varchar), assignments.doc_id
        ) as pick_rank,
    from assignments
    anti join exclusions
        on assignments.cluster_id = exclusions.cluster_id

),

final as (

    select
        ranked.cluster_id,
        ranked.pick_rank,
        ranked.doc_id,
        documents.text,
    from ranked
    inner join documents
        on ranked.doc_id = documents.doc_id
    where ranked.pick_rank <= {{ var('lossi_docs_per_cluster') }}

)

select * from final

-- One row per document chosen for MiniPile: inside each kept cluster, the `quota`
-- documents with the smallest seeded hash of doc_id. A hash of the id alone makes the
-- choice independent of threads, chunking and row order (the original reproduction's
-- was not).

with quotas as (

    select * from {{ ref('int_cluster_quotas') }}

),

assignments as (

    select * from {{ ref('int_cluster_assignments') }}

),

ranked as (

    select
        assignments.doc_id,
        assignments.cluster_id,
        assignments.distance,
        quotas.quota,
        row_number() over (
            partition by assignments.cluster_id
            order by md5('select:{{ var("seed") }}:' || assignments.doc_id::varchar), assignments.doc_id
        ) as pick_rank,
    from assignments
    inner join quotas
        on assignments.cluster_id = quotas.cluster_id

),

final as (

    select
        doc_id,
        cluster_id,
        distance,
        pick_rank,
    from ranked
    where pick_rank <= quota

)

select * from final

-- One row per document chosen for MiniPile: inside each kept cluster, the `quota` eligible
-- documents with the smallest seeded hash of doc_id. A hash of the id alone makes the
-- choice independent of threads, chunking and row order (the original reproduction's
-- was not).

with quotas as (

    select * from {{ ref('int_cluster_quotas') }}

),

eligible as (

    select * from {{ ref('int_documents_eligible') }}

),

ranked as (

    select
        eligible.doc_id,
        eligible.cluster_id,
        eligible.distance,
        quotas.quota,
        row_number() over (
            partition by eligible.cluster_id
            order by md5('select:{{ var("seed") }}:' || eligible.doc_id::varchar), eligible.doc_id
        ) as pick_rank,
    from eligible
    inner join quotas
        on eligible.cluster_id = quotas.cluster_id

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

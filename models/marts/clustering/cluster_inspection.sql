-- the seed's cluster_info_for_inspection.json as a table: what a person reads before
-- deciding to exclude a cluster
with assignments as (

    select * from {{ ref('int_cluster_assignments') }}

),

documents as (

    select * from {{ ref('documents') }}

),

ranked as (

    select
        assignments.cluster_id,
        assignments.doc_id,
        assignments.distance,
        left(documents.text, 256) as excerpt,
        row_number() over (
            partition by assignments.cluster_id
            order by assignments.distance asc, assignments.doc_id asc
        ) as closeness_rank,
        row_number() over (
            partition by assignments.cluster_id
            order by assignments.distance desc, assignments.doc_id asc
        ) as farness_rank,
    from assignments
    inner join documents
        on assignments.doc_id = documents.doc_id

),

final as (

    select
        cluster_id,
        count(*) as total_examples,
        avg(distance) as average_distance,
        sum(distance) as sum_distance,
        list(
            {'doc_id': doc_id, 'distance': distance, 'excerpt': excerpt}
            order by closeness_rank
        ) filter (where closeness_rank <= 5) as closest,
        list(
            {'doc_id': doc_id, 'distance': distance, 'excerpt': excerpt}
            order by farness_rank
        ) filter (where farness_rank <= 5) as farthest,
    from ranked
    group by cluster_id

)

select * from final
order by cluster_id

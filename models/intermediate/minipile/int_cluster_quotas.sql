{{ config(post_hook="{{ assert_enough_for_minipile(this) }}") }}

-- One row per kept cluster: how many documents MiniPile takes from it.
-- Uniform quota as in the seed (total / kept clusters, the remainder one each to the
-- lowest-numbered kept clusters). Clusters smaller than their share give all they have
-- and the shortfall is spread, the same way, over the clusters with documents to spare
-- (water-filling), so the total is exact whenever enough documents exist.

with centroids as (

    select * from {{ ref('int_kmeans_centroids') }}

),

assignments as (

    select * from {{ ref('int_cluster_assignments') }}

),

exclusions as (

    select * from {{ ref('cluster_exclusions') }}

),

-- every cluster of the fit, an empty one with 0 documents (as cluster_centroids.n_docs)
sizes as (

    select
        centroids.cluster_id,
        count(assignments.doc_id)::bigint as n_docs,
    from centroids
    left join assignments
        on centroids.cluster_id = assignments.cluster_id
    group by centroids.cluster_id

),

kept as (

    select
        sizes.cluster_id,
        sizes.n_docs,
    from sizes
    anti join exclusions
        on sizes.cluster_id = exclusions.cluster_id

),

target as (

    select
        {{ minipile_total() }}::bigint as total,

),

sorted as (

    select
        cluster_id,
        n_docs,
        row_number() over (order by n_docs, cluster_id) - 1 as size_rank,
        count(*) over () as n_kept,
        coalesce(
            sum(n_docs) over (
                order by n_docs, cluster_id
                rows between unbounded preceding and 1 preceding
            ),
            0
        ) as smaller_docs,
    from kept

),

-- a cluster is capped (gives all its documents) when even a level equal to its size
-- leaves the total unreached; this holds for a prefix of the clusters sorted by size
flagged as (

    select
        sorted.*,
        sorted.smaller_docs + sorted.n_docs * (sorted.n_kept - sorted.size_rank)
            <= target.total as is_capped,
    from sorted
    cross join target

),

level as (

    select
        count(*) filter (where is_capped) as n_capped,
        coalesce(sum(n_docs) filter (where is_capped), 0) as capped_docs,
        count(*) filter (where not is_capped) as n_uncapped,
    from flagged

),

shares as (

    select
        level.n_uncapped,
        case
            when level.n_uncapped > 0
                then (target.total - level.capped_docs) // level.n_uncapped
        end as base_quota,
        case
            when level.n_uncapped > 0
                then (target.total - level.capped_docs) % level.n_uncapped
        end as n_plus_one,
    from level
    cross join target

),

uncapped_order as (

    select
        cluster_id,
        row_number() over (order by cluster_id) as id_rank,
    from flagged
    where not is_capped

),

final as (

    select
        flagged.cluster_id,
        flagged.n_docs,
        flagged.is_capped,
        case
            when flagged.is_capped then flagged.n_docs
            else shares.base_quota + (uncapped_order.id_rank <= shares.n_plus_one)::bigint
        end::bigint as quota,
    from flagged
    cross join shares
    left join uncapped_order
        on flagged.cluster_id = uncapped_order.cluster_id

)

select * from final
order by cluster_id

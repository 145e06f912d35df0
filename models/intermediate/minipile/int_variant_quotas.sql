{{ config(post_hook="{{ assert_enough_for_variants(this) }}") }}

-- One row per (variant, kept cluster): the variant's quota for the cluster, from the same
-- pilehouse_quotas UDF as int_cluster_quotas, called once per variant (one input row each).
-- With unit tokens the cluster's size is its GPT-NeoX tokens and the quota a token budget;
-- ρ stays the documents' mean distance (sum_distance scaled to the token count).

with variants as (

    select * from {{ ref('int_sampling_variants') }}

),

centroids as (

    select * from {{ ref('int_kmeans_centroids') }}

),

eligible as (

    select * from {{ ref('int_documents_eligible') }}

),

exclusions as (

    select * from {{ ref('cluster_exclusions') }}

),

token_counts as (

    select * from {{ variant_token_counts() }}

),

-- a reference LM's mean loss per kept cluster; empty unless a variant is loss_informed
losses as (

    select * from {{ ref('int_cluster_losses') }}

),

-- distances summed as DECIMAL: exact whatever the thread count or row order
eligible_stats as (

    select
        eligible.cluster_id,
        count(*)::bigint as n_docs,
        sum(token_counts.n_tokens)::bigint as n_tokens,
        sum(eligible.distance::decimal(18, 15)) as sum_distance,
    from eligible
    left join token_counts
        on eligible.doc_id = token_counts.doc_id
    group by eligible.cluster_id

),

kept as (

    select
        centroids.cluster_id,
        centroids.centroid,
        coalesce(eligible_stats.n_docs, 0)::bigint as n_docs,
        coalesce(eligible_stats.n_tokens, 0)::bigint as n_tokens,
        coalesce(eligible_stats.sum_distance, 0)::double as sum_distance,
        losses.mean_loss::double as mean_loss,
    from centroids
    left join eligible_stats
        on centroids.cluster_id = eligible_stats.cluster_id
    left join losses
        on centroids.cluster_id = losses.cluster_id
    anti join exclusions
        on centroids.cluster_id = exclusions.cluster_id

),

variant_clusters as (

    select
        variants.variant,
        kept.cluster_id,
        kept.centroid,
        kept.n_docs,
        kept.n_tokens,
        kept.sum_distance,
        kept.mean_loss,
        case when variants.unit = 'tokens' then kept.n_tokens else kept.n_docs end as n_units,
        case
            when variants.unit = 'tokens' and kept.n_docs > 0 then kept.sum_distance / kept.n_docs * kept.n_tokens
            else kept.sum_distance
        end as sum_distance_units,
    from variants
    cross join kept

),

stats as (

    select
        variant,
        list(
            {
                'cluster_id': cluster_id,
                'n_docs': n_units,
                'sum_distance': sum_distance_units,
                'centroid': centroid::float[],
                'mean_loss': mean_loss,
            }
            order by cluster_id
        ) as clusters,
    from variant_clusters
    group by variant

),

allotted as (

    select
        stats.variant,
        unnest(
            pilehouse_quotas(
                stats.clusters,
                variants.strategy,
                variants.total,
                variants.total_mode,
                variants.density_weight,
                variants.low_density_weight,
                variants.inter_cluster_weights
            ),
            recursive := true
        ),
    from stats
    inner join variants
        on stats.variant = variants.variant

),

final as (

    select
        allotted.variant,
        allotted.cluster_id,
        variants.unit,
        variant_clusters.n_docs,
        variant_clusters.n_tokens,
        variant_clusters.n_units,
        variant_clusters.sum_distance,
        case
            when variant_clusters.n_docs > 0 then variant_clusters.sum_distance / variant_clusters.n_docs else 0
        end as mean_distance,
        allotted.is_capped,
        allotted.target,
        allotted.quota,
        variants.total,
    from allotted
    inner join variant_clusters
        on allotted.variant = variant_clusters.variant
        and allotted.cluster_id = variant_clusters.cluster_id
    inner join variants
        on allotted.variant = variants.variant

)

select * from final
order by variant, cluster_id

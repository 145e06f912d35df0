{{ config(post_hook="{{ assert_enough_for_minipile(this) }}") }}

-- One row per kept cluster: how many of its eligible documents (int_documents_eligible:
-- after the curation steps) MiniPile takes from it, by the
-- `sampling_strategy` and `sampling_total` vars (docs/minipile.md#sampling-strategies).
-- loss_informed reads each kept cluster's mean loss from int_cluster_losses (NULL otherwise).
-- The arithmetic is python_udfs/minipile/quotas.py, called through the UDF pilehouse_quotas
-- that the dbt plugin registers; `pilehouse quotas` runs the same function on a stats file.
-- The default (uniform, exact) is the seed's rule: total / kept clusters, the remainder one
-- each to the lowest-numbered kept clusters; clusters smaller than their share give all they
-- have and the shortfall is spread the same way over the others (water-filling), so the
-- total is exact whenever enough documents exist. With sampling_unit tokens the sizes and the
-- total are GPT-NeoX tokens: a cluster's size is its tokens, its quota a token budget
-- (docs/minipile.md#token-budgets), ρ still its documents' mean distance.

with centroids as (

    select * from {{ ref('int_kmeans_centroids') }}

),

eligible as (

    select * from {{ ref('int_documents_eligible') }}

),

token_counts as (

    select * from {{ minipile_token_counts() }}

),

exclusions as (

    select * from {{ ref('cluster_exclusions') }}

),

-- a reference LM's mean loss per kept cluster; empty unless loss_informed is in use
losses as (

    select * from {{ ref('int_cluster_losses') }}

),

-- distances summed as DECIMAL: exact, so the same whatever the thread count or row order
assignment_stats as (

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

-- every cluster of the fit, an empty one with 0 documents (as cluster_centroids.n_docs)
sizes as (

    select
        centroids.cluster_id,
        centroids.centroid,
        coalesce(assignment_stats.n_docs, 0)::bigint as n_docs,
        coalesce(assignment_stats.n_tokens, 0)::bigint as n_tokens,
        coalesce(assignment_stats.sum_distance, 0)::double as sum_distance,
    from centroids
    left join assignment_stats
        on centroids.cluster_id = assignment_stats.cluster_id

),

kept as (

    select
        sizes.cluster_id,
        sizes.centroid,
        sizes.n_docs,
        sizes.n_tokens,
        sizes.sum_distance,
        losses.mean_loss::double as mean_loss,
        -- the size the quota counts: documents, or tokens with sampling_unit tokens
        case when '{{ var("sampling_unit") }}' = 'tokens' then sizes.n_tokens else sizes.n_docs end as n_units,
        case
            when '{{ var("sampling_unit") }}' = 'tokens' and sizes.n_docs > 0
                then sizes.sum_distance / sizes.n_docs * sizes.n_tokens
            else sizes.sum_distance
        end as sum_distance_units,
    from sizes
    anti join exclusions
        on sizes.cluster_id = exclusions.cluster_id
    left join losses
        on sizes.cluster_id = losses.cluster_id

),

allotted as (

    select
        unnest(
            pilehouse_quotas(
                list(
                    {
                        'cluster_id': cluster_id,
                        'n_docs': n_units,
                        'sum_distance': sum_distance_units,
                        'centroid': centroid::float[],
                        'mean_loss': mean_loss,
                    }
                    order by cluster_id
                ),
                '{{ var("sampling_strategy") }}',
                {{ minipile_total() }},
                '{{ var("sampling_total") }}',
                {{ var('density_weight') }},
                {{ var('low_density_weight') }},
                {{ var('inter_cluster_weights') }}::double[]
            ),
            recursive := true
        ),
    from kept

),

final as (

    select
        allotted.cluster_id,
        kept.n_docs,
        kept.n_tokens,
        kept.n_units,
        kept.sum_distance,
        case when kept.n_docs > 0 then kept.sum_distance / kept.n_docs else 0 end as mean_distance,
        kept.mean_loss,
        allotted.is_capped,
        allotted.target,
        allotted.quota,
    from allotted
    inner join kept
        on allotted.cluster_id = kept.cluster_id

)

select * from final
order by cluster_id

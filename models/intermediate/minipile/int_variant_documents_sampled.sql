-- One row per (variant, chosen document): inside each kept cluster, documents in the order of
-- the seeded hash md5('select:<seed>:' || doc_id) (int_documents_sampled's), taken while the
-- cluster's quota is not reached: the first `quota` documents (unit documents), or while the
-- tokens taken before the document are below the token budget (unit tokens: the document
-- that reaches the budget is taken whole, so a cluster overshoots by less than one document).

with variants as (

    select * from {{ ref('int_sampling_variants') }}

),

quotas as (

    select * from {{ ref('int_variant_quotas') }}

),

eligible as (

    select * from {{ ref('int_documents_eligible') }}

),

token_counts as (

    select * from {{ variant_token_counts() }}

),

ranked as (

    select
        quotas.variant,
        eligible.doc_id,
        eligible.cluster_id,
        eligible.distance,
        quotas.unit,
        quotas.quota,
        token_counts.n_tokens,
        case when quotas.unit = 'tokens' then token_counts.n_tokens else 1 end as n_units,
        row_number() over (
            partition by quotas.variant, eligible.cluster_id
            order by md5('select:' || variants.seed::varchar || ':' || eligible.doc_id::varchar), eligible.doc_id
        ) as pick_rank,
    from eligible
    inner join quotas
        on eligible.cluster_id = quotas.cluster_id
    inner join variants
        on quotas.variant = variants.variant
    left join token_counts
        on eligible.doc_id = token_counts.doc_id

),

taken as (

    select
        *,
        coalesce(sum(n_units) over (
            partition by variant, cluster_id
            order by pick_rank
            rows between unbounded preceding and 1 preceding
        ), 0) as units_before,
    from ranked

),

final as (

    select
        variant,
        doc_id,
        cluster_id,
        distance,
        pick_rank,
        n_tokens,
        n_units,
    from taken
    where (unit = 'documents' and pick_rank <= quota)
        or (unit = 'tokens' and units_before < quota)

)

select * from final

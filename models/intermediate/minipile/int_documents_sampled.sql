-- One row per document chosen for MiniPile: inside each kept cluster, the `quota` eligible
-- documents with the smallest seeded hash of doc_id. A hash of the id alone makes the
-- choice independent of threads, chunking and row order (the original reproduction's
-- was not). With sampling_unit tokens the quota is a token budget: documents in that order
-- while the tokens taken before them are below it (the one reaching it is taken whole).

with quotas as (

    select * from {{ ref('int_cluster_quotas') }}

),

eligible as (

    select * from {{ ref('int_documents_eligible') }}

),

token_counts as (

    select * from {{ minipile_token_counts() }}

),

ranked as (

    select
        eligible.doc_id,
        eligible.cluster_id,
        eligible.distance,
        quotas.quota,
        token_counts.n_tokens,
        case when '{{ var("sampling_unit") }}' = 'tokens' then token_counts.n_tokens else 1 end as n_units,
        row_number() over (
            partition by eligible.cluster_id
            order by md5('select:{{ var("seed") }}:' || eligible.doc_id::varchar), eligible.doc_id
        ) as pick_rank,
    from eligible
    inner join quotas
        on eligible.cluster_id = quotas.cluster_id
    left join token_counts
        on eligible.doc_id = token_counts.doc_id

),

taken as (

    select
        *,
        coalesce(sum(n_units) over (
            partition by cluster_id
            order by pick_rank
            rows between unbounded preceding and 1 preceding
        ), 0) as units_before,
    from ranked

),

final as (

    select
        doc_id,
        cluster_id,
        distance,
        pick_rank,
        n_tokens,
        n_units,
    from taken
    where case when '{{ var("sampling_unit") }}' = 'tokens' then units_before < quota else pick_rank <= quota end

)

select * from final

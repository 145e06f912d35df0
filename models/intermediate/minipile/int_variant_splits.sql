-- One row per (variant, sampled document): each variant's documents in the seeded shuffle
-- md5('shuffle:<seed>:' || doc_id) (int_minipile_splits'), cut into train, validation and test
-- in that order. A document goes to train while the units (documents or tokens) before it in
-- the shuffle are below the train cut, then validation likewise; the cuts are the split sizes
-- scaled to what the sample holds (sampled units x size // total), as int_minipile_splits cuts
-- a short seed-mode sample, so an exact document sample is cut at exactly the sizes.

with variants as (

    select * from {{ ref('int_sampling_variants') }}

),

sampled as (

    select * from {{ ref('int_variant_documents_sampled') }}

),

shuffled as (

    select
        sampled.variant,
        sampled.doc_id,
        sampled.cluster_id,
        sampled.distance,
        sampled.n_tokens,
        sampled.n_units,
        row_number() over (
            partition by sampled.variant
            order by md5('shuffle:' || variants.seed::varchar || ':' || sampled.doc_id::varchar), sampled.doc_id
        ) - 1 as shuffle_position,
    from sampled
    inner join variants
        on sampled.variant = variants.variant

),

positioned as (

    select
        *,
        coalesce(sum(n_units) over (
            partition by variant
            order by shuffle_position
            rows between unbounded preceding and 1 preceding
        ), 0) as units_before,
    from shuffled

),

cuts as (

    select
        sampled.variant,
        sum(sampled.n_units) * any_value(variants.train_size) // greatest(any_value(variants.total), 1) as n_train,
        sum(sampled.n_units) * any_value(variants.validation_size) // greatest(any_value(variants.total), 1)
            as n_validation,
    from sampled
    inner join variants
        on sampled.variant = variants.variant
    group by sampled.variant

),

final as (

    select
        positioned.variant,
        positioned.doc_id,
        case
            when positioned.units_before < cuts.n_train then 'train'
            when positioned.units_before < cuts.n_train + cuts.n_validation then 'validation'
            else 'test'
        end as split,
        positioned.cluster_id,
        positioned.distance,
        positioned.shuffle_position,
        positioned.n_tokens,
    from positioned
    inner join cuts
        on positioned.variant = cuts.variant

)

select * from final
order by variant, shuffle_position

-- One row per sampled document: the chosen documents in a seeded shuffle, cut into
-- train, validation and test in that order with the sizes from vars. No text: `minipile`
-- joins the documents for that.

with sampled as (

    select * from {{ ref('int_documents_sampled') }}

),

shuffled as (

    select
        doc_id,
        cluster_id,
        distance,
        case when '{{ var("sampling_unit") }}' = 'tokens' then n_units else 1 end as n_units,
        row_number() over (
            order by md5('shuffle:{{ var("seed") }}:' || doc_id::varchar), doc_id
        ) - 1 as shuffle_position,
    from sampled

),

positioned as (

    select
        *,
        coalesce(sum(n_units) over (
            order by shuffle_position
            rows between unbounded preceding and 1 preceding
        ), 0) as units_before,
    from shuffled

),

-- the split sizes: the vars whenever the sample holds their total (always, with
-- sampling_total exact); the seed's shorter sample (sampling_total seed) is cut in proportion
-- to them, as the seed cut it, the test split taking what the rounding leaves (in tokens
-- with sampling_unit tokens, whose sample overshoots its budget by less than a document a cluster)
cuts as (

    select
        coalesce(sum(n_units), 0) * {{ var('train_size') }} // greatest({{ minipile_total() }}, 1) as n_train,
        coalesce(sum(n_units), 0) * {{ var('validation_size') }} // greatest({{ minipile_total() }}, 1) as n_validation,
    from shuffled

),

final as (

    select
        positioned.doc_id,
        case
            when positioned.units_before < cuts.n_train then 'train'
            when positioned.units_before < cuts.n_train + cuts.n_validation then 'validation'
            else 'test'
        end as split,
        positioned.cluster_id,
        positioned.distance,
        positioned.shuffle_position,
    from positioned
    cross join cuts

)

select * from final
order by shuffle_position

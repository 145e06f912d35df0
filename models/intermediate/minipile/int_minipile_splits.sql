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
        row_number() over (
            order by md5('shuffle:{{ var("seed") }}:' || doc_id::varchar), doc_id
        ) - 1 as shuffle_position,
    from sampled

),

-- the split sizes: the vars whenever the sample holds their total (always, with
-- sampling_total exact); the seed's shorter sample (sampling_total seed) is cut in proportion
-- to them, as the seed cut it, the test split taking what the rounding leaves
cuts as (

    select
        count(*) * {{ var('train_size') }} // greatest({{ minipile_total() }}, 1) as n_train,
        count(*) * {{ var('validation_size') }} // greatest({{ minipile_total() }}, 1) as n_validation,
    from sampled

),

final as (

    select
        shuffled.doc_id,
        case
            when shuffled.shuffle_position < cuts.n_train then 'train'
            when shuffled.shuffle_position < cuts.n_train + cuts.n_validation then 'validation'
            else 'test'
        end as split,
        shuffled.cluster_id,
        shuffled.distance,
        shuffled.shuffle_position,
    from shuffled
    cross join cuts

)

select * from final
order by shuffle_position

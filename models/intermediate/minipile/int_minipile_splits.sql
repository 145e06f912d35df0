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

final as (

    select
        doc_id,
        case
            when shuffle_position < {{ var('train_size') }} then 'train'
            when shuffle_position < {{ var('train_size') }} + {{ var('validation_size') }}
                then 'validation'
            else 'test'
        end as split,
        cluster_id,
        distance,
        shuffle_position,
    from shuffled

)

select * from final
order by shuffle_position

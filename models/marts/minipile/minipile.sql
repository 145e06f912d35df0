-- One row per sampled document: the chosen documents in a seeded shuffle, cut into
-- train, validation and test in that order with the sizes from vars.

with sampled as (

    select * from {{ ref('int_documents_sampled') }}

),

documents as (

    select * from {{ ref('documents') }}

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
        shuffled.doc_id,
        case
            when shuffled.shuffle_position < {{ var('train_size') }} then 'train'
            when shuffled.shuffle_position < {{ var('train_size') }} + {{ var('validation_size') }}
                then 'validation'
            else 'test'
        end as split,
        shuffled.cluster_id,
        documents.source,
        documents.text,
        shuffled.distance,
        shuffled.shuffle_position,
    from shuffled
    inner join documents
        on shuffled.doc_id = documents.doc_id

)

select * from final
order by shuffle_position

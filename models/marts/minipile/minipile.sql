-- One row per sampled document: int_minipile_splits with each document's source and text.

with splits as (

    select * from {{ ref('int_minipile_splits') }}

),

documents as (

    select * from {{ ref('documents') }}

),

final as (

    select
        splits.doc_id,
        splits.split,
        splits.cluster_id,
        documents.source,
        documents.text,
        splits.distance,
        splits.shuffle_position,
    from splits
    inner join documents
        on splits.doc_id = documents.doc_id

)

select * from final
order by shuffle_position

-- One row per (variant, sampled document): every sampling variant's documents and splits
-- (int_variant_splits) with each document's source. Variant minipile is minipile's own rows.

with splits as (

    select * from {{ ref('int_variant_splits') }}

),

documents as (

    select * from {{ ref('documents') }}

),

final as (

    select
        splits.variant,
        splits.doc_id,
        splits.split,
        splits.cluster_id,
        documents.source,
        splits.distance,
        splits.shuffle_position,
    from splits
    inner join documents
        on splits.doc_id = documents.doc_id

)

select * from final
order by variant, shuffle_position

{{ config(materialized='view') }}

-- One row per document: its L2-normalised embedding. The vectors the clustering reads.

with embedded as (

    select * from {{ ref('int_documents_embedded') }}

),

final as (

    select
        doc_id,
        embedding,
        model,
    from embedded

)

select * from final

{{ config(materialized='view') }}

-- One row per document: its nearest centroid and the cosine distance to it.

with clustered as (

    select * from {{ ref('int_documents_clustered') }}

),

final as (

    select
        doc_id,
        cluster_id,
        distance,
    from clustered

)

select * from final

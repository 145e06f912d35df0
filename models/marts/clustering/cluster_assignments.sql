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

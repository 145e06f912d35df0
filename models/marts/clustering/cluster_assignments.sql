with clustered as (

    select * from {{ ref('int_cluster_assignments') }}

),

final as (

    select
        doc_id,
        cluster_id,
        distance,
    from clustered

)

select * from final

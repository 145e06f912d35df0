with centroids as (

    select * from {{ ref('int_kmeans_centroids') }}

),

assignments as (

    select * from {{ ref('int_cluster_assignments') }}

),

sizes as (

    select
        cluster_id,
        count(*) as n_docs,
    from assignments
    group by cluster_id

),

final as (

    select
        centroids.cluster_id,
        centroids.centroid,
        coalesce(sizes.n_docs, 0)::bigint as n_docs,
    from centroids
    left join sizes
        on centroids.cluster_id = sizes.cluster_id

)

select * from final

-- One row per cluster: its size, its main source and its place on a 2-D map of the
-- centroids. The review page, the report and prompt_scan_clusters all read the main source
-- here, so they name it by one rule: the source with the most documents in the cluster,
-- ties to the alphabetically first source (byte order).

with assignments as (

    select * from {{ ref('int_cluster_assignments') }}

),

documents as (

    select * from {{ ref('stg_lake__documents') }}

),

centroids as (

    select * from {{ ref('int_kmeans_centroids') }}

),

source_counts as (

    select
        assignments.cluster_id,
        documents.source,
        count(*) as n_source_docs,
    from assignments
    inner join documents
        on assignments.doc_id = documents.doc_id
    group by all

),

ranked_sources as (

    select
        cluster_id,
        source,
        n_source_docs,
        sum(n_source_docs) over (partition by cluster_id) as n_docs,
        row_number() over (
            partition by cluster_id
            order by n_source_docs desc, source asc
        ) as source_rank,
    from source_counts

),

main_sources as (

    select
        cluster_id,
        n_docs,
        source as main_source,
        n_source_docs / n_docs as main_share,
    from ranked_sources
    where source_rank = 1

),

-- pilehouse_pca_2d (python_udfs/udfs.py): exact PCA of the centred centroids, each axis'
-- sign fixed so that its largest coordinate is positive; one list in, one point per row out
projected as (

    select
        list(cluster_id order by cluster_id) as cluster_ids,
        pilehouse_pca_2d(list(centroid order by cluster_id)) as points,
    from centroids

),

map_points as (

    select
        unnest(cluster_ids) as cluster_id,
        unnest(points) as point,
    from projected

),

final as (

    select
        centroids.cluster_id,
        coalesce(main_sources.n_docs, 0)::bigint as n_docs,
        main_sources.main_source,
        main_sources.main_share,
        map_points.point.x as x,
        map_points.point.y as y,
        map_points.point.x_variance_share as x_variance_share,
        map_points.point.y_variance_share as y_variance_share,
    from centroids
    left join main_sources
        on centroids.cluster_id = main_sources.cluster_id
    left join map_points
        on centroids.cluster_id = map_points.cluster_id

)

select * from final
order by cluster_id

-- Variant minipile (the global vars, built by the variant models) holds exactly minipile's
-- rows: the same documents, splits, clusters and shuffle positions. Rows in one and not the other.
with variant as (

    select doc_id, split, cluster_id, shuffle_position
    from {{ ref('minipile_variant_documents') }}
    where variant = 'minipile'

),

minipile as (

    select doc_id, split, cluster_id, shuffle_position from {{ ref('minipile') }}

)

(select 'only in the variant' as side, * from (select * from variant except all select * from minipile))
union all
(select 'only in minipile' as side, * from (select * from minipile except all select * from variant))

-- Variant minipile (the global vars, built by the variant models) holds exactly minipile's
-- rows: the same documents, splits, clusters and shuffle positions. Rows in one and not the other.
-- A build that selects minipile alone (dbt selects a test when one of its parents is) has no
-- variant table to compare: the test then checks nothing.
{%- set variants = load_relation(ref('minipile_variant_documents')) if execute else none %}
{%- if execute and variants is none %}
select null as side where false
{%- else %}
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
{%- endif %}

-- One row per curation step, then one for what is left: whether the step is on, how many
-- documents it flags (exact: the candidates even when off; the others compute nothing while
-- off) and how many it removes from what sampling may draw.

with assignments as (

    select * from {{ ref('int_cluster_assignments') }}

),

eligible as (

    select * from {{ ref('int_documents_eligible') }}

),

exact_candidates as (

    select * from {{ ref('int_exact_duplicates') }}

),

semantic as (

    select * from {{ ref('int_semantic_duplicates') }}

),

contaminated as (

    select * from {{ ref('int_contaminated_documents') }}

),

steps as (

    select
        1 as step_order,
        'exact_dedup' as step,
        {{ var('exact_dedup') }} as enabled,
        '{{ var("exact_dedup") }}' as setting,
        (select count(*) from exact_candidates) as documents_flagged,
    union all
    select
        2,
        'semdedup',
        '{{ var("semdedup_eps") }}' not in ('None', ''),
        'eps={{ var("semdedup_eps") }}, keep={{ var("semdedup_keep") }}',
        (select count(*) from semantic),
    union all
    select
        3,
        'decontaminate',
        {{ var('decontaminate') }},
        '{{ var("decontaminate") }}',
        (select count(distinct doc_id) from contaminated)

),

final as (

    select
        step_order,
        step,
        enabled,
        setting,
        documents_flagged::bigint as documents_flagged,
        case when enabled then documents_flagged else 0 end::bigint as documents_removed,
    from steps
    union all
    select
        4,
        'eligible',
        null,
        null,
        null,
        (select count(*) from assignments) - (select count(*) from eligible),
    from (select 1)

)

select * from final
order by step_order

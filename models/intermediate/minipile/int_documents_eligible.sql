-- One row per document sampling may draw from: every assigned document. The curation
-- branch (dedup/decontamination) narrows it; the variant models read it.

with assignments as (

    select * from {{ ref('int_cluster_assignments') }}

),

final as (

    select
        doc_id,
        cluster_id,
        distance,
    from assignments

)

select * from final

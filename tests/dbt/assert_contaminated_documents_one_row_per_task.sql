-- contaminated_documents' grain: one row per (doc_id, task), each with at least one match.

with contaminated as (

    select * from {{ ref('contaminated_documents') }}

),

final as (

    select
        doc_id,
        task,
        count(*) as n_rows,
        min(n_matches) as min_matches,
    from contaminated
    group by doc_id, task
    having count(*) > 1 or min(n_matches) < 1

)

select * from final

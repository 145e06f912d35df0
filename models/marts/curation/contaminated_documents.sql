-- One row per (document, benchmark task) sharing a 13-gram (empty while decontaminate is false).

with contaminated as (

    select * from {{ ref('int_contaminated_documents') }}

),

final as (

    select
        doc_id,
        task,
        n_matches,
        example_ngram,
    from contaminated

)

select * from final
order by doc_id, task

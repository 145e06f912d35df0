with embedded as (

    select * from {{ ref('int_document_embeddings') }}

),

final as (

    select
        doc_id,
        embedding,
        model,
    from embedded

)

select * from final

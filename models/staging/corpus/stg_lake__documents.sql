with source as (

    select * from {{ source('lake', 'documents') }}

),

final as (

    select
        doc_id::bigint as doc_id,
        source::varchar as source,
        text::varchar as text,
        meta::varchar as meta,
        source_file::varchar as source_file,
        record_number::bigint as record_number,
    from source

)

select * from final

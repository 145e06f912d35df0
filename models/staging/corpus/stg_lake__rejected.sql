with source as (

    select * from {{ source('lake', 'rejected') }}

),

final as (

    select
        record_index::bigint as record_index,
        source_file::varchar as source_file,
        record_number::bigint as record_number,
        reason::varchar as reason,
        detail::varchar as detail,
        raw::varchar as raw,
    from source

)

select * from final

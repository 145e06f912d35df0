-- One row per rejected record; record_index is its position in the whole input.

with records as (

    select * from {{ source('lake', 'records') }}

),

manifest as (

    select * from {{ source('lake', 'manifest') }}

),

final as (

    select
        (manifest.first_record_index + records.record_number)::bigint as record_index,
        records.source_file::varchar as source_file,
        records.record_number::bigint as record_number,
        records.reason::varchar as reason,
        records.detail::varchar as detail,
        records.raw::varchar as raw,
    from records
    inner join manifest
        on records.file_index = manifest.file_index
        and records.source_file = manifest.source_file
    where records.reason is not null

)

select * from final

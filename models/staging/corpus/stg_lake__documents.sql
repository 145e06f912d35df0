-- One row per accepted record; doc_id is the record's position in the whole input.

with records as (

    select * from {{ source('lake', 'records') }}

),

manifest as (

    select * from {{ source('lake', 'manifest') }}

),

final as (

    select
        (manifest.first_record_index + records.record_number)::bigint as doc_id,
        records.source::varchar as source,
        records.text::varchar as text,
        records.meta::varchar as meta,
        records.source_file::varchar as source_file,
        records.record_number::bigint as record_number,
    from records
    inner join manifest
        on records.file_index = manifest.file_index
        and records.source_file = manifest.source_file
    where records.reason is null

)

select * from final

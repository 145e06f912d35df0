with source as (

    select * from {{ source('lake', 'manifest') }}

),

final as (

    select
        source_file::varchar as source_file,
        n_records::bigint as n_records,
        n_accepted::bigint as n_accepted,
        n_rejected::bigint as n_rejected,
        first_record_index::bigint as first_record_index,
    from source

)

select * from final

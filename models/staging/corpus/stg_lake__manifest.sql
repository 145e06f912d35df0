with source as (

    select * from {{ source('lake', 'manifest') }}

),

final as (

    select
        file_index::bigint as file_index,
        source_file::varchar as source_file,
        n_records::bigint as n_records,
        n_accepted::bigint as n_accepted,
        n_rejected::bigint as n_rejected,
        first_record_index::bigint as first_record_index,
        reasons,
        fingerprint::varchar as fingerprint,
    from source

)

select * from final

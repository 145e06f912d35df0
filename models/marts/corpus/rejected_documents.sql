with rejected as (

    select * from {{ ref('stg_lake__rejected') }}

),

final as (

    select
        source_file,
        record_number,
        record_index,
        reason,
        detail,
        raw,
    from rejected

)

select * from final

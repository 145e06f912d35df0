-- One row per (id0, id1): its most common next token (ties: the smallest id). As many rows as
-- distinct bigrams, so it is a view over the counts rather than a table in the DuckDB file.

with trigrams as (

    select * from {{ ref('trigrams') }}

),

final as (

    select
        id0,
        id1,
        -- the key orders by count, then prefers the smaller id on ties
        arg_max(id2, count * 65536 + (65535 - id2)) as id2,
        sum(count)::bigint as sum_count,
        max(count)::bigint as max_count,
        max(count) / sum(count) as frac_max,
    from trigrams
    group by id0, id1

)

select * from final

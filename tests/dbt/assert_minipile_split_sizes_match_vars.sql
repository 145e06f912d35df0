-- Each split holds exactly the configured number of documents. With sampling_total seed the
-- quotas add up to fewer (the seed's arithmetic, nothing redistributed): then each of train
-- and validation holds floor(sampled x its size / total) and test the rest. With
-- sampling_unit tokens the sizes are tokens and a split's last document is taken whole, so no
-- count is exact: that cut is checked by tests/minipile/test_variants.py instead.
with sampled as (

    {% if var('sampling_total') == 'seed' -%}
    select coalesce(sum(quota), 0) as n from {{ ref('int_cluster_quotas') }}
    {%- else -%}
    select {{ minipile_total() }} as n
    {%- endif %}

),

expected as (

    select 'train' as split, n * {{ var('train_size') }} // greatest({{ minipile_total() }}, 1) as n
    from sampled
    union all
    select 'validation', n * {{ var('validation_size') }} // greatest({{ minipile_total() }}, 1)
    from sampled
    union all
    select
        'test',
        n - n * {{ var('train_size') }} // greatest({{ minipile_total() }}, 1)
        - n * {{ var('validation_size') }} // greatest({{ minipile_total() }}, 1)
    from sampled

),

actual as (

    select split, count(*) as n from {{ ref('minipile') }} group by split

)

select expected.split, expected.n as expected_n, coalesce(actual.n, 0) as actual_n
from expected
left join actual on expected.split = actual.split
where expected.n != coalesce(actual.n, 0)
    and '{{ var("sampling_unit") }}' = 'documents'

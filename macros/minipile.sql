{% macro minipile_total() -%}
    {#- documents MiniPile takes in all: the three split sizes -#}
    ({{ var('train_size') }} + {{ var('validation_size') }} + {{ var('test_size') }})
{%- endmacro %}


{% macro assert_enough_for_minipile(relation) -%}
    {#- fails the build, with the numbers, when the kept clusters cannot fill the splits -#}
    select
        case
            when coalesce(sum(n_docs), 0) < {{ minipile_total() }}
                then error(
                    'minipile needs ' || {{ minipile_total() }}::varchar
                    || ' documents (train_size + validation_size + test_size) but the kept clusters hold only '
                    || coalesce(sum(n_docs), 0)::varchar
                    || ': lower the split sizes or exclude fewer clusters'
                )
        end
    from {{ relation }}
{%- endmacro %}

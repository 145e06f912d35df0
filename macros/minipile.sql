{% macro minipile_total() -%}
    {#- documents MiniPile takes in all: the three split sizes -#}
    ({{ var('train_size') }} + {{ var('validation_size') }} + {{ var('test_size') }})
{%- endmacro %}


{% macro assert_enough_for_minipile(relation) -%}
    {#- fails the build, with the numbers, when the kept clusters cannot fill the splits -#}
    select
        case
            when coalesce(sum(n_units), 0) < {{ minipile_total() }}
                then error(
                    'minipile needs ' || {{ minipile_total() }}::varchar
                    || ' {{ var("sampling_unit") }} (train_size + validation_size + test_size) but the kept clusters hold only '
                    || coalesce(sum(n_units), 0)::varchar
                    || ': lower the split sizes or exclude fewer clusters'
                )
        end
    from {{ relation }}
{%- endmacro %}


{% macro minipile_token_counts() -%}
    {#- (doc_id, n_tokens) of every document with sampling_unit tokens (the n-gram catalog's
        int_documents_tokenized, so ngram_source must be documents), else an empty relation -#}
    {%- if var('sampling_unit') == 'tokens' -%}
        {%- if var('ngram_source') != 'documents' -%}
            {%- do exceptions.raise_compiler_error('sampling_unit tokens counts document_tokens, which needs ngram_source documents, not ' ~ var('ngram_source')) -%}
        {%- endif -%}
        (select doc_id, n_tokens::bigint as n_tokens from {{ ref('int_documents_tokenized') }})
    {%- elif var('sampling_unit') == 'documents' -%}
        (select null::bigint as doc_id, null::bigint as n_tokens where false)
    {%- else -%}
        {%- do exceptions.raise_compiler_error('sampling_unit must be documents or tokens, not ' ~ var('sampling_unit')) -%}
    {%- endif -%}
{%- endmacro %}

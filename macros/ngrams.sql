{% macro _relation_exists(name) -%}
    {{ return(adapter.get_relation(database=target.database, schema=target.schema, identifier=name) is not none) }}
{%- endmacro %}


{% macro create_ngram_macros() %}
    {#- on-run-end: DuckDB table macros stored in the warehouse, so the common questions
        work in any SQL shell (harlequin, the duckdb CLI) without dbt or Python. DuckDB
        binds a macro's tables when it is created, so each is made once its tables exist. -#}
    {% if execute %}
    {% if _relation_exists('neox_vocab') %}
        create or replace macro neox_id(token_text) as (
            select min(id) from neox_vocab where token = token_text
        );
    {% endif %}
    {% if _relation_exists('neox_vocab') and _relation_exists('trigrams') and _relation_exists('bigrams') %}
        create or replace macro what_follows(token0, token1) as table
            select
                t.id2 as next_id,
                v.token as next_token,
                t.count,
                round(t.count / sum(t.count) over (), 4) as fraction,
            from trigrams as t
            inner join neox_vocab as v on v.id = t.id2
            where t.id0 = neox_id(token0) and t.id1 = neox_id(token1)
            order by t.count desc, t.id2;
        create or replace macro what_follows_token(token0) as table
            select
                b.id1 as next_id,
                v.token as next_token,
                b.count,
                round(b.count / sum(b.count) over (), 4) as fraction,
            from bigrams as b
            inner join neox_vocab as v on v.id = b.id1
            where b.id0 = neox_id(token0)
            order by b.count desc, b.id1;
    {% endif %}
    {% if _relation_exists('document_tokens') and _relation_exists('cluster_assignments') and _relation_exists('top_trigrams') %}
        create or replace macro cluster_top_trigrams(cluster) as table
            with docs as (
                select d.doc_id, d.tokens
                from document_tokens as d
                inner join cluster_assignments as a on a.doc_id = d.doc_id
                where a.cluster_id = cluster
            ),
            windows as (
                select doc_id, tokens[i] as id0, tokens[i + 1] as id1, tokens[i + 2] as id2
                from docs, range(1, len(tokens) - 1) as r(i)
            )
            select
                t.id0, t.id1, t.id2, t.token0, t.token1, t.token2, t.seq, t.frac_max,
                count(*) as count_in_cluster,
                count(distinct w.doc_id) as documents_in_cluster,
                t.sum_count as count_in_corpus,
            from windows as w
            inner join top_trigrams as t
                on t.id0 = w.id0 and t.id1 = w.id1 and t.id2 = w.id2
            group by all
            order by count_in_cluster desc, t.frac_max desc;
    {% endif %}
    {% endif %}
{% endmacro %}


{% macro what_follows(prefix_text, limit=20) %}
    {#- for dbt show: the next tokens after a text's last one or two GPT-NeoX tokens,
        e.g. dbt show --inline "{{ what_follows(\"' the United'\") }}" -#}
    with prefix as (
        select neox_encode({{ prefix_text }}) as ids
    )
    select
        t.id2 as next_id,
        neox_decode([t.id2]) as next_token,
        t.count,
        round(t.count / sum(t.count) over (), 4) as fraction,
    from {{ ref('trigrams') }} as t, prefix
    where len(prefix.ids) >= 2
        and t.id0 = prefix.ids[-2] and t.id1 = prefix.ids[-1]
    order by t.count desc, t.id2
    limit {{ limit }}
{% endmacro %}

{{ config(materialized='table') }}
{%- set corpus_tokens = var('ngram_source') == 'documents' %}
-- One row per sampling variant (minipile first): its size and how its mix differs from the
-- corpus's (docs/minipile.md#variants). Both KL divergences are D(variant || corpus) in nats
-- (natural log) over document counts (sources) or within-document GPT-NeoX bigram counts; the
-- variant's documents are corpus documents, so every variant bigram or source has a positive
-- corpus probability and the divergence is finite with no smoothing. With ngram_source
-- minipile the corpus is not tokenized: the variants' documents are tokenized here and
-- bigram_kl is null. The KL terms are summed as DECIMAL(38, 24), exact, so the result does
-- not depend on the thread count or row order.

with variants as (

    select * from {{ ref('int_sampling_variants') }}

),

variant_documents as (

    select * from {{ ref('int_variant_splits') }}

),

documents as (

    select * from {{ ref('documents') }}

),

top_trigrams as (

    select * from {{ ref('top_trigrams') }}

),

-- the normalised-text hash exact dedup uses (int_document_text_hashes, python_udfs/curation)
text_hashes as (

    select * from {{ ref('int_document_text_hashes') }}

),

contamination as (

    select * from {{ ref('int_variant_contamination') }}

),

{% if corpus_tokens -%}
tokens as (

    select doc_id, n_tokens, tokens::integer[] as tokens, from {{ ref('document_tokens') }}

),
{%- else -%}
tokens as (

    select doc_id, len(ids)::bigint as n_tokens, ids as tokens,
    from (
        select documents.doc_id, neox_encode(documents.text) as ids,
        from documents
        semi join variant_documents
            on documents.doc_id = variant_documents.doc_id
    )

),
{%- endif %}

-- within-document bigrams, id0 x 65536 + id1 (the vocabulary fits 16 bits)
document_bigrams as (

    select
        doc_id,
        unnest(list_transform(range(1, len(tokens)), lambda i: tokens[i]::bigint * 65536 + tokens[i + 1])) as bigram,
    from tokens
    where len(tokens) > 1

),

variant_docs as (

    select
        variant_documents.variant,
        variant_documents.doc_id,
        variant_documents.cluster_id,
        documents.source,
        documents.text,
        tokens.n_tokens,
    from variant_documents
    inner join documents
        on variant_documents.doc_id = documents.doc_id
    left join tokens
        on variant_documents.doc_id = tokens.doc_id

),

sizes as (

    select
        variant_docs.variant,
        count(*) as documents,
        sum(variant_docs.n_tokens)::bigint as tokens,
        sum(strlen(variant_docs.text))::bigint as bytes,
        count(distinct variant_docs.cluster_id) as clusters,
        count(*) - count(distinct text_hashes.text_hash) as duplicates_left,
        count(*) filter (where variant_docs.doc_id in (select doc_id from contamination)) as contaminated_left,
    from variant_docs
    inner join text_hashes
        on variant_docs.doc_id = text_hashes.doc_id
    group by variant_docs.variant

),

corpus_sources as (

    select source, count(*) / sum(count(*)) over () as p_corpus,
    from documents
    group by source

),

variant_sources as (

    select variant, source, count(*) / sum(count(*)) over (partition by variant) as p_variant,
    from variant_docs
    group by variant, source

),

source_kl as (

    select
        variant_sources.variant,
        sum((variant_sources.p_variant * ln(variant_sources.p_variant / corpus_sources.p_corpus))::decimal(38, 24))::double
            as source_kl,
    from variant_sources
    inner join corpus_sources
        on variant_sources.source = corpus_sources.source
    group by variant_sources.variant

),

{% if corpus_tokens -%}
corpus_bigrams as (

    select bigram, count(*) / sum(count(*)) over () as p_corpus,
    from document_bigrams
    group by bigram

),

variant_bigrams as (

    select
        variant_documents.variant,
        document_bigrams.bigram,
        count(*) / sum(count(*)) over (partition by variant_documents.variant) as p_variant,
    from variant_documents
    inner join document_bigrams
        on variant_documents.doc_id = document_bigrams.doc_id
    group by variant_documents.variant, document_bigrams.bigram

),

bigram_kl as (

    select
        variant_bigrams.variant,
        sum((variant_bigrams.p_variant * ln(variant_bigrams.p_variant / corpus_bigrams.p_corpus))::decimal(38, 24))::double
            as bigram_kl,
    from variant_bigrams
    inner join corpus_bigrams
        on variant_bigrams.bigram = corpus_bigrams.bigram
    group by variant_bigrams.variant

),
{%- else -%}
bigram_kl as (

    select variant, null::double as bigram_kl, from variants

),
{%- endif %}

prefixes as (

    select distinct id0::bigint * 65536 + id1 as bigram, from top_trigrams

),

-- top_trigrams prefixes that occur as a bigram in a variant document
prefix_hits as (

    select variant_documents.variant, count(distinct document_bigrams.bigram) as n_prefixes,
    from variant_documents
    inner join document_bigrams
        on variant_documents.doc_id = document_bigrams.doc_id
    semi join prefixes
        on document_bigrams.bigram = prefixes.bigram
    group by variant_documents.variant

),

final as (

    select
        variants.variant,
        variants.strategy,
        variants.total_mode,
        variants.unit,
        coalesce(sizes.documents, 0) as documents,
        coalesce(sizes.tokens, 0) as tokens,
        coalesce(sizes.bytes, 0) as bytes,
        coalesce(sizes.clusters, 0) as clusters,
        source_kl.source_kl,
        bigram_kl.bigram_kl,
        coalesce(prefix_hits.n_prefixes, 0) / nullif((select count(*) from prefixes), 0) as top_trigram_share,
        coalesce(sizes.duplicates_left, 0) as duplicates_left,
        coalesce(sizes.contaminated_left, 0) as contaminated_left,
        variants.variant_order,
    from variants
    left join sizes
        on variants.variant = sizes.variant
    left join source_kl
        on variants.variant = source_kl.variant
    left join bigram_kl
        on variants.variant = bigram_kl.variant
    left join prefix_hits
        on variants.variant = prefix_hits.variant

)

select * from final
order by variant_order

{#- Where things live: the one dbt twin of python_udfs/settings.py (lake_dir, lake_path).
    tests/test_settings.py checks both give the same paths for the same vars. -#}

{% macro lake_dir() -%}
    {#- the parquet lake: the lake_dir var, else $PILEHOUSE_LAKE, else warehouse/lake -#}
    {{ var('lake_dir', none) or env_var('PILEHOUSE_LAKE', '') or 'warehouse/lake' }}
{%- endmacro %}


{% macro embedding_slug() -%}
    {#- the embedding folder: changes whenever the vectors would change (settings.embedding_slug) -#}
    {%- set model = var('embedding_model') | string -%}
    {%- set max_tokens = var('embedding_max_tokens') | int -%}
    {%- set key = model ~ '|' ~ max_tokens ~ '|' ~ (var('embedding_prefix') or '') -%}
    {%- if var('embedding_dtype') and var('embedding_dtype') != 'float32' -%}
        {%- set key = key ~ '|' ~ var('embedding_dtype') -%}
    {%- endif -%}
    {%- if var('embedding_backend') and var('embedding_backend') != 'torch' -%}
        {%- set key = key ~ '|' ~ var('embedding_backend') -%}
    {%- endif -%}
    {%- set name = modules.re.sub('[^A-Za-z0-9]+', '-', model).strip('-').lower() -%}
    {{ name }}-{{ max_tokens }}-{{ local_md5(key)[:8] }}
{%- endmacro %}


{% macro ngram_source_slug() -%}
    {#- folder name of the tokenized input: documents, or minipile-train -#}
    {{ 'minipile-train' if var('ngram_source') == 'minipile' else 'documents' }}
{%- endmacro %}


{% macro lake_path(kind) -%}
    {#- a step's folder in the lake (settings.lake_path) -#}
    {%- if kind == 'corpus' -%} {{ lake_dir() }}/corpus
    {%- elif kind in ('embeddings', 'assignments') -%} {{ lake_dir() }}/{{ kind }}/{{ embedding_slug() }}
    {%- elif kind == 'tokens' -%} {{ lake_dir() }}/tokens/{{ ngram_source_slug() }}
    {%- elif kind == 'ngrams' -%} {{ lake_dir() }}/ngrams/{{ ngram_source_slug() }}-{{ var('ngram_seq_len') }}
    {%- elif kind == 'scan' -%} {{ lake_dir() }}/scan
    {%- else -%} {{ exceptions.raise_compiler_error("unknown lake folder " ~ kind) }}
    {%- endif -%}
{%- endmacro %}


{% macro ngram_dir() -%}
    {{ lake_path('ngrams') }}
{%- endmacro %}


{% macro print_lake_paths() -%}
    {#- `dbt run-operation print_lake_paths`: every lake folder for the current vars, as JSON,
        plus where the YAML files (which cannot call macros) point: the corpus source's
        location and the lake_dir each Python model is configured with, and the profile's
        warehouse file. tests/test_settings.py compares all of it with python_udfs.settings. -#}
    {%- set paths = {} -%}
    {%- for kind in ['corpus', 'embeddings', 'assignments', 'tokens', 'ngrams', 'scan'] -%}
        {%- do paths.update({kind: lake_path(kind) | trim}) -%}
    {%- endfor -%}
    {%- set configured = {} -%}
    {%- for node in graph.nodes.values() if node.config.get('lake_dir') is not none -%}
        {%- do configured.update({node.name: node.config.get('lake_dir') | string}) -%}
    {%- endfor -%}
    {%- do paths.update({
        'lake_dir': lake_dir() | trim,
        'source_records': source('lake', 'records') | string,
        'model_lake_dirs': configured,
        'db': target.path,
    }) -%}
    {{ print(tojson(paths)) }}
{%- endmacro %}

{% macro sampling_variant_keys() -%}
    {#- the vars a variant may override (docs/minipile.md#variants) -#}
    {{ tojson(['sampling_strategy', 'sampling_total', 'sampling_unit', 'density_weight', 'low_density_weight',
               'inter_cluster_weights', 'train_size', 'validation_size', 'test_size', 'seed']) }}
{%- endmacro %}


{% macro sampling_variants() -%}
    {#- JSON: the variants to build, minipile (the global vars) first, then each item of the
        sampling_variants var with its overrides over the globals; callers fromjson() it -#}
    {%- set keys = fromjson(sampling_variant_keys()) -%}
    {%- set base = {'name': 'minipile'} -%}
    {%- for key in keys -%}{%- do base.update({key: var(key)}) -%}{%- endfor -%}
    {%- set out = [base] -%}
    {%- set items = var('sampling_variants') or [] -%}
    {%- if items is string or items is mapping -%}
        {%- do exceptions.raise_compiler_error('sampling_variants must be a list of strategy names or mappings, got ' ~ items) -%}
    {%- endif -%}
    {%- for item in items -%}
        {%- set variant = {} -%}
        {%- do variant.update(base) -%}
        {%- if item is string -%}
            {%- do variant.update({'name': item, 'sampling_strategy': item}) -%}
        {%- elif item is mapping -%}
            {%- if 'name' not in item -%}
                {%- do exceptions.raise_compiler_error('sampling_variants: item ' ~ loop.index ~ ' (' ~ item ~ ') has no name') -%}
            {%- endif -%}
            {%- for key in item -%}
                {%- if key != 'name' and key not in keys -%}
                    {%- do exceptions.raise_compiler_error('sampling_variants: ' ~ item['name'] ~ ' sets ' ~ key
                        ~ ', not one of name, ' ~ keys | join(', ')) -%}
                {%- endif -%}
            {%- endfor -%}
            {%- do variant.update(item) -%}
        {%- else -%}
            {%- do exceptions.raise_compiler_error('sampling_variants: item ' ~ loop.index ~ ' must be a strategy name or a mapping, got ' ~ item) -%}
        {%- endif -%}
        {%- set name = variant['name'] | string -%}
        {%- if not modules.re.match('^[a-z][a-z0-9_]*$', name) -%}
            {%- do exceptions.raise_compiler_error('sampling_variants: name ' ~ name ~ ' must be lower-case letters, digits and _, starting with a letter') -%}
        {%- endif -%}
        {%- for seen in out -%}
            {%- if seen['name'] == name -%}
                {%- do exceptions.raise_compiler_error('sampling_variants: the name ' ~ name ~ ' is used twice (minipile is the global vars\' own variant)') -%}
            {%- endif -%}
        {%- endfor -%}
        {%- do variant.update({'name': name}) -%}
        {%- do out.append(variant) -%}
    {%- endfor -%}
    {%- for variant in out -%}
        {%- for key in ['sampling_strategy', 'sampling_total', 'sampling_unit'] -%}
            {%- if not modules.re.match('^[a-z_]+$', variant[key] | string) -%}
                {%- do exceptions.raise_compiler_error('sampling_variants: ' ~ variant['name'] ~ ': ' ~ key ~ ' ' ~ variant[key] ~ ' is not a name') -%}
            {%- endif -%}
        {%- endfor -%}
        {%- if variant['sampling_unit'] not in ['documents', 'tokens'] -%}
            {%- do exceptions.raise_compiler_error('sampling_unit must be documents or tokens; variant ' ~ variant['name'] ~ ' has ' ~ variant['sampling_unit']) -%}
        {%- endif -%}
        {%- if variant['sampling_unit'] == 'tokens' and var('ngram_source') != 'documents' -%}
            {%- do exceptions.raise_compiler_error('sampling_unit tokens (variant ' ~ variant['name'] ~ ') counts document_tokens, which needs ngram_source documents, not ' ~ var('ngram_source')) -%}
        {%- endif -%}
    {%- endfor -%}
    {{ tojson(out) }}
{%- endmacro %}


{% macro sampling_variants_sql() -%}
    {#- the variants as a relation, one row each (int_sampling_variants) -#}
    select * from (values
    {%- for v in fromjson(sampling_variants()) %}
        ('{{ v.name }}', {{ loop.index0 }}, '{{ v.sampling_strategy }}', '{{ v.sampling_total }}', '{{ v.sampling_unit }}',
         {{ v.density_weight | float }}::double, {{ v.low_density_weight | float }}::double,
         [{% for w in v.inter_cluster_weights %}{{ w | float }}{{ ', ' if not loop.last }}{% endfor %}]::double[],
         {{ v.train_size | int }}::bigint, {{ v.validation_size | int }}::bigint, {{ v.test_size | int }}::bigint,
         {{ v.seed | int }}::bigint){{ ',' if not loop.last }}
    {%- endfor %}
    ) as variants(variant, variant_order, strategy, total_mode, unit, density_weight, low_density_weight,
                  inter_cluster_weights, train_size, validation_size, test_size, seed)
{%- endmacro %}


{% macro variant_token_counts() -%}
    {#- (doc_id, n_tokens) of every document when a variant counts tokens, else an empty relation
        (so a documents-only build never tokenizes for sampling) -#}
    {%- set ns = namespace(tokens=false) -%}
    {%- for v in fromjson(sampling_variants()) -%}
        {%- if v.sampling_unit == 'tokens' -%}{%- set ns.tokens = true -%}{%- endif -%}
    {%- endfor -%}
    {%- if ns.tokens -%}
        (select doc_id, n_tokens::bigint as n_tokens from {{ ref('int_documents_tokenized') }})
    {%- else -%}
        (select null::bigint as doc_id, null::bigint as n_tokens where false)
    {%- endif -%}
{%- endmacro %}


{% macro assert_enough_for_variants(relation) -%}
    {#- fails the build, with the numbers, when a variant's kept clusters cannot fill its splits -#}
    select
        case
            when supply < total
                then error(
                    'sampling variant ' || variant || ' needs ' || total::varchar || ' ' || unit
                    || ' (train_size + validation_size + test_size) but its kept clusters hold only '
                    || supply::varchar || ': lower its split sizes or exclude fewer clusters'
                )
        end
    from (
        select variant, any_value(unit) as unit, any_value(total) as total, coalesce(sum(n_units), 0) as supply,
        from {{ relation }}
        group by variant
    )
{%- endmacro %}

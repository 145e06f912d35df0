{% macro scan_dir() -%}
    {#- where the prompt scanner's parts live: {lake_dir}/scan/<model>/part-*.parquet -#}
    {{ lake_dir() }}/scan
{%- endmacro %}

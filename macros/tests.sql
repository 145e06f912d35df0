{% test strictly_above(model, column_name, low) %}
    {#- rows whose value is not strictly above `low` (a range test without dbt_utils) -#}
    select {{ column_name }}
    from {{ model }}
    where not ({{ column_name }} > {{ low }})
{% endtest %}


{% test between(model, column_name, low, high) %}
    {#- rows whose value lies outside [low, high] (nulls pass, as in not_null's absence) -#}
    select {{ column_name }}
    from {{ model }}
    where {{ column_name }} < {{ low }} or {{ column_name }} > {{ high }}
{% endtest %}

-- One row per kept scan window (Confirm Labs' pile_scan): p_long > scan_min_p_long and
-- js > scan_min_js, deduplicated on text per model (the most confident occurrence, ties
-- to the first seq_id and position), ordered by p_long. Every model scanned into the lake.
-- depends_on: {{ ref('int_prompt_scan_windows') }} (the scanner writes the parts read here)
{{ config(tags=["scan"]) }}

with windows as (
    select * from read_parquet('{{ scan_dir() }}/*/part-*.parquet', union_by_name = true)
)

select
    text, token_short, token_long, p_short, p_long, js, jensen_shannon, long_ids,
    short_max_id, long_max_id, context, p_delta_max, logit_excite_max, logit_inhibit_max,
    token_next, next_id, model, tokenizer, seq_id, position, doc_id, cluster_id
from windows
qualify row_number() over (partition by model, text order by p_long desc, seq_id, position) = 1
order by model, p_long desc, text

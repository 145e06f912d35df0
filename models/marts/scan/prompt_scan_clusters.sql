-- Which clusters the scan's tasks come from: per (model, cluster), documents and windows
-- scanned, windows kept (before deduplication), kept per 1,000 windows, and the cluster's
-- most confident task. No published catalog offers this: it needs the clusters.
{{ config(tags=["scan"]) }}

with scanned as (
    select model, cluster_id, count(*) as documents_scanned, sum(windows)::bigint as windows_scanned
    from {{ ref('int_prompt_scan_windows') }}
    group by all
),

kept as (
    select
        model, cluster_id, count(*) as windows_kept, count(distinct text) as distinct_tasks,
        arg_max(text || ' -> ' || token_long, p_long) as top_task,
        max(p_long) as top_p_long
    from read_parquet('{{ scan_dir() }}/*/part-*.parquet', union_by_name = true)
    group by all
),

-- a cluster's main source by the one rule every consumer shares (cluster_summary)
sources as (
    select cluster_id, main_source
    from {{ ref('cluster_summary') }}
)

select
    s.model, s.cluster_id, src.main_source, s.documents_scanned, s.windows_scanned,
    coalesce(k.windows_kept, 0) as windows_kept, coalesce(k.distinct_tasks, 0) as distinct_tasks,
    round(1000.0 * coalesce(k.windows_kept, 0) / nullif(s.windows_scanned, 0), 2) as kept_per_1k_windows,
    k.top_task, k.top_p_long
from scanned s
left join kept k on k.model = s.model and k.cluster_id is not distinct from s.cluster_id
left join sources src on src.cluster_id = s.cluster_id
order by s.model, windows_kept desc, s.cluster_id

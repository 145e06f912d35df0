-- eval_variant_scores: one row per (experiment, task, metric, doc_limit), and the mean
-- lies inside its interval and between the seeds' min and max.
select experiment, task, metric, doc_limit, count(*) as n_rows
from {{ ref('eval_variant_scores') }}
group by experiment, task, metric, doc_limit
having count(*) > 1
    or bool_or(value_mean < value_min - 1e-12 or value_mean > value_max + 1e-12)
    or bool_or(ci95_low > value_mean or ci95_high < value_mean)

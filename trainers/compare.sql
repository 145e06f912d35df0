-- eval_comparison: one row per (model pair, task, metric).
-- Plain DuckDB SQL over `eval_scores` (trainers/evaluate.py writes it) and
-- `eval_pairs(model_a, model_b)`; wrap it in a dbt model by swapping the two table names
-- for refs/sources. The same math as trainers.compare.compare (tested to agree):
--   pct_difference = 100 * (b - a) / a                      (null when a = 0)
--   ci95 of b - a  = (b - a) -/+ 1.96 * sqrt(se_a^2 + se_b^2) (null when a stderr is null)
--   interpretation = 'difference not significant' when the interval contains 0, else
--                    '<model> better', lower being better for perplexities, bits_per_byte and loss.
-- Both models must have been scored with the same --limit (doc_limit); when a pair shares
-- several, the full split (null) wins, then the largest limit.
with

scores as (
    select
        model,
        task,
        metric,
        value,
        stderr,
        n,
        doc_limit,
    from eval_scores
),

pairs as (
    select distinct
        model_a,
        model_b,
    from eval_pairs
),

matched as (
    select
        pairs.model_a,
        pairs.model_b,
        a.task,
        a.metric,
        a.value as value_a,
        a.stderr as stderr_a,
        b.value as value_b,
        b.stderr as stderr_b,
        a.n as n_a,
        b.n as n_b,
        a.doc_limit,
    from pairs
    inner join scores as a
        on a.model = pairs.model_a
    inner join scores as b
        on b.model = pairs.model_b
        and b.task = a.task
        and b.metric = a.metric
        and b.doc_limit is not distinct from a.doc_limit
    qualify row_number() over (
        partition by pairs.model_a, pairs.model_b, a.task, a.metric
        order by a.doc_limit is null desc, a.doc_limit desc
    ) = 1
),

intervals as (
    select
        *,
        value_b - value_a as difference,
        1.96 * sqrt(pow(stderr_a, 2) + pow(stderr_b, 2)) as margin,
        not (metric like '%perplexity' or metric in ('bits_per_byte', 'loss')) as higher_is_better,
    from matched
),

final as (
    select
        model_a,
        model_b,
        task,
        metric,
        value_a,
        stderr_a,
        value_b,
        stderr_b,
        case when value_a != 0 then 100 * (value_b - value_a) / value_a end as pct_difference,
        difference - margin as ci95_low,
        difference + margin as ci95_high,
        case
            when margin is null then 'stderr missing'
            when difference - margin <= 0 and difference + margin >= 0
                then 'difference not significant'
            when (difference > 0) = higher_is_better then model_b || ' better'
            else model_a || ' better'
        end as interpretation,
        higher_is_better,
        n_a,
        n_b,
        doc_limit,
    from intervals
)

select * from final

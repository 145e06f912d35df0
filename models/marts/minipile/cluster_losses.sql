-- One row per kept cluster a reference LM scored (loss_informed sampling): its mean loss over
-- the scored documents, the standard error, and the model. Empty unless loss_informed is in use.

with losses as (

    select * from {{ ref('int_cluster_losses') }}

),

final as (

    select
        cluster_id,
        n_docs_scored,
        n_tokens,
        mean_loss,
        stderr,
        model,
    from losses

)

select * from final
order by cluster_id

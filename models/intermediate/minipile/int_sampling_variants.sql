{{ config(materialized="ephemeral") }}

-- One row per sampling variant (docs/minipile.md#variants): minipile (the global vars) first,
-- then each item of the sampling_variants var, every setting resolved (its own or the global).

with variants as (

    {{ sampling_variants_sql() }}

),

final as (

    select
        variant,
        variant_order,
        strategy,
        total_mode,
        unit,
        density_weight,
        low_density_weight,
        inter_cluster_weights,
        train_size,
        validation_size,
        test_size,
        train_size + validation_size + test_size as total,
        seed,
    from variants

)

select * from final
order by variant_order

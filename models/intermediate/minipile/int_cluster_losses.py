"""One row per kept cluster with a scored document: a reference causal LM's mean loss on up to
lossi_docs_per_cluster of its documents (int_cluster_loss_documents), the loss_informed
strategy's weights (python_udfs/minipile/lossi.py). Empty, and no model loaded, unless
sampling_strategy or an item of sampling_variants is loss_informed."""

from python_udfs.minipile.lossi import LossConfig, cluster_losses, empty_losses, losses_needed


def model(dbt, session):
    dbt.config(materialized="table")
    # vars are read with direct dbt.config.get calls: wrapped calls come back as None
    strategy = dbt.config.get("sampling_strategy")
    variants = dbt.config.get("sampling_variants")
    config = LossConfig.from_vars({
        "lossi_model": dbt.config.get("lossi_model"),
        "lossi_docs_per_cluster": dbt.config.get("lossi_docs_per_cluster"),
        "lossi_max_tokens": dbt.config.get("lossi_max_tokens"),
        "lossi_batch_size": dbt.config.get("lossi_batch_size"),
        "lossi_device": dbt.config.get("lossi_device"),
    })
    documents = dbt.ref("int_cluster_loss_documents")
    if not losses_needed(strategy, variants):
        return empty_losses()
    table = cluster_losses(documents.order("cluster_id, pick_rank").arrow().read_all(), config)
    print(f"cluster losses: {table.num_rows} clusters, {sum(table.column('n_docs_scored').to_pylist())} documents "
          f"scored by {config.model} (at most {config.docs_per_cluster} per cluster, {config.max_tokens} tokens each)")
    return table

"""Stage 3, distillation: how many documents MiniPile takes from each kept cluster (``quotas``,
shared by dbt's ``int_cluster_quotas`` and ``pilehouse quotas``)."""

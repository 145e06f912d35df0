"""What the next `dbt build` would sample with the default `sampling_strategy` (uniform).

The model's own arithmetic (`python_udfs.minipile.quotas`, which `int_cluster_quotas` calls;
tests check the preview against the model's SQL and against a built warehouse): total / kept
clusters, the remainder one each to the lowest-numbered kept clusters; a cluster smaller than
its share gives all its documents and the shortfall is spread the same way over the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from python_udfs.minipile.quotas import ClusterStats
from python_udfs.minipile.quotas import quotas as shared_quotas


@dataclass(frozen=True)
class ClusterQuota:
    cluster_id: int
    n_docs: int
    is_capped: bool
    quota: int


@dataclass(frozen=True)
class QuotaPreview:
    total: int
    quotas: list[ClusterQuota]
    excluded: frozenset[int]

    @property
    def kept_docs(self) -> int:
        """Documents in the kept clusters (what the sample is drawn from)."""
        return sum(q.n_docs for q in self.quotas)

    @property
    def sampled(self) -> int:
        return sum(q.quota for q in self.quotas)

    @property
    def enough(self) -> bool:
        """False when the build would fail (assert_enough_for_minipile)."""
        return self.kept_docs >= self.total

    @property
    def n_capped(self) -> int:
        return sum(q.is_capped for q in self.quotas)


def cluster_quotas(sizes: Mapping[int, int], excluded: Iterable[int], total: int) -> QuotaPreview:
    """Per kept cluster, how many documents MiniPile takes, for `total` documents in all."""
    excluded = frozenset(excluded)
    kept = [ClusterStats(cluster_id, n_docs) for cluster_id, n_docs in sizes.items() if cluster_id not in excluded]
    quotas = [ClusterQuota(cluster_id=q.cluster_id, n_docs=q.n_docs, is_capped=q.is_capped, quota=q.quota)
              for q in shared_quotas(kept, "uniform", None, total, "exact")]
    return QuotaPreview(total=total, quotas=quotas, excluded=excluded)

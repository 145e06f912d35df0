"""What the next `dbt build` would sample: `int_cluster_quotas.sql` in Python.

The same rule as the model, step for step (tests check it against the model's own SQL and
against a built warehouse): total / kept clusters, the remainder one each to the
lowest-numbered kept clusters; a cluster is capped (gives all its documents) when
`docs in smaller clusters + its size x clusters from it upwards <= total` (clusters
sorted by size, then id), and the shortfall is spread the same way over the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


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
    kept = sorted((n_docs, cluster_id) for cluster_id, n_docs in sizes.items() if cluster_id not in excluded)
    n_kept = len(kept)
    capped: set[int] = set()
    capped_docs = 0
    smaller_docs = 0
    for size_rank, (n_docs, cluster_id) in enumerate(kept):
        if smaller_docs + n_docs * (n_kept - size_rank) <= total:
            capped.add(cluster_id)
            capped_docs += n_docs
        smaller_docs += n_docs
    uncapped = sorted(cluster_id for _, cluster_id in kept if cluster_id not in capped)
    base, n_plus_one = divmod(total - capped_docs, len(uncapped)) if uncapped else (0, 0)
    id_rank = {cluster_id: rank for rank, cluster_id in enumerate(uncapped, start=1)}
    quotas = [
        ClusterQuota(
            cluster_id=cluster_id,
            n_docs=n_docs,
            is_capped=cluster_id in capped,
            quota=n_docs if cluster_id in capped else base + int(id_rank[cluster_id] <= n_plus_one),
        )
        for n_docs, cluster_id in kept
    ]
    quotas.sort(key=lambda q: q.cluster_id)
    return QuotaPreview(total=total, quotas=quotas, excluded=excluded)

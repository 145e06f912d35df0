"""Curation steps before MiniPile's sampling: exact and semantic deduplication, benchmark
decontamination (docs/minipile.md#deduplication-and-decontamination).

- :mod:`.normalise`: the text normalisation and 64-bit hash ``exact_duplicates`` groups by.
- :mod:`.semdedup`: SemDeDup inside each k-means cluster, an exact blocked pairwise pass.
- :mod:`.contamination`: 13-gram overlap with the benchmarks ``make experiment`` scores.
"""

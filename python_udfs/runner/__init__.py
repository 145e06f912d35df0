"""The part runner: every expensive step is a pure function over one part, written as an
atomic, fingerprinted parquet part; an executor computes the parts."""

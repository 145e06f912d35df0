"""The cluster review page: read clusters from the warehouse, write the exclusion seed.

`make review` (or `python -m python_udfs.apps.review`) serves it on 127.0.0.1; see app.py.
"""

from python_udfs.apps.review.seed import CATEGORIES

__all__ = ["CATEGORIES"]

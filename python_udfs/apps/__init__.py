"""Apps for people: the cluster review page (``review``) and the HTML report (``report``)."""

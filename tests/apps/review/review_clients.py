"""TestClients for the review page that talk to it as a browser on the page itself would."""

from __future__ import annotations

BASE_URL = "http://127.0.0.1:8765"  # ReviewConfig's default host and port: the Host the page answers


def review_client(app, *, token: bool = True, **kwargs):
    """Host 127.0.0.1:8765 and (token=True) the page's form token, sent in its header."""
    from fastapi.testclient import TestClient

    from python_udfs.apps.review.app import TOKEN_HEADER

    headers = {TOKEN_HEADER: app.state.csrf_token} if token else {}
    return TestClient(app, base_url=BASE_URL, headers=headers, **kwargs)

"""``rnnlab serve``: an HTTP service that keeps models loaded and batches concurrent requests.

``app`` (FastAPI endpoints and the web page), ``requests`` (request checking), ``batching`` (the
per-model dynamic batching queue), ``models`` (named models, loaded in the background), ``metrics``
(Prometheus) and ``server`` (uvicorn, signals). Needs the ``serve`` extra: ``pip install rnnlab[serve]``.
"""

"""Operating the chat: health probes, Prometheus metrics and structured logs.

It sits above ``web/`` and ``realtime/``: it may read both (the runtime's health, the hub's
counters), and neither imports it.
"""

from flask import Flask

from ops import health, metrics


def init_app(app: Flask) -> None:
    """Register ``/healthz``, ``/readyz`` and (with ``CHAT_METRICS``) ``/metrics``."""
    health.init_app(app)
    metrics.init_app(app)

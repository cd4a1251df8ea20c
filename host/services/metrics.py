"""Prometheus metrics of an ingest worker (``medge ingest --metrics-port``).

:class:`MetricsServer` serves ``GET /metrics`` in the Prometheus text format
(prometheus_client, the ``host`` extra) from a callable returning
:meth:`host.services.ingest.Ingest.stats`, read at every scrape (nothing is
cached or copied).  Counters count since the process started (Prometheus
handles restarts); the store's own running totals are ``medge ingest --stats``.

=============================================  =======  ==================================
metric                                         type     from ``stats()``
=============================================  =======  ==================================
``medge_ingest_received_total``                counter  ``received``
``medge_ingest_stored_total``                  counter  ``stored``
``medge_ingest_duplicates_total``              counter  ``duplicates``
``medge_ingest_conflicts_total``               counter  ``conflicts``
``medge_ingest_ignored_total``                 counter  ``ignored`` (host -> device traffic)
``medge_ingest_rejected_total{reason}``        counter  ``rejected`` (every Reason, 0 too)
``medge_ingest_storage_errors_total``          counter  ``errors`` (failed batch commits)
``medge_ingest_lag_seconds``                   gauge    ``lag_ms``: receive to commit, the
                                                        oldest message of the last batch
``medge_ingest_queued``                        gauge    ``queued``: received, not committed
``medge_ingest_connected``                     gauge    1 connected and subscribed, else 0
``medge_ingest_storage_failing``               gauge    1 while the store cannot be written
``medge_ingest_storage_failing_since_seconds`` gauge    Unix time it started failing (0: ok)
``medge_ingest_info{client_id,group}``         gauge    1
=============================================  =======  ==================================

Served on 127.0.0.1 by default: the counters name devices' traffic volumes, so
exposing them beyond the host is the operator's decision (``HOST:PORT``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Optional, Union

from host.services.messages import Reason

PREFIX = "medge_ingest"
DEFAULT_HOST = "127.0.0.1"

#: The info metric's labels: a dict, or a callable returning one at each scrape.
Labels = Optional[Union[dict[str, str], Callable[[], dict[str, str]]]]

_COUNTERS = (
    ("received", "received", "Messages received from the broker and given an outcome"),
    ("stored", "stored", "Messages stored (committed)"),
    ("duplicates", "duplicates", "Re-deliveries of an already stored message"),
    ("conflicts", "conflicts", "Messages whose (device, incarnation, seq) was stored with "
     "other content (kept aside)"),
    ("ignored", "ignored", "Valid messages not for ingest (host -> device traffic)"),
    ("storage_errors", "errors", "Batch commits that failed (retried; nothing acknowledged)"),
)


class MetricsUnavailable(RuntimeError):
    """prometheus_client is not installed; ``str()`` says how to install it."""


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise MetricsUnavailable(
            "--metrics-port needs the prometheus_client package (pip install 'medge[host]' "
            "or pip install prometheus_client)") from None
    return prometheus_client


class IngestCollector:
    """A prometheus_client collector reading ``stats()`` at every scrape."""

    def __init__(self, stats: Callable[[], dict[str, Any]], labels: Labels = None) -> None:
        self.stats = stats
        self.labels = labels

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self.stats()
        for name, key, doc in _COUNTERS:
            yield CounterMetricFamily(f"{PREFIX}_{name}", doc, value=s.get(key, 0))
        rejected = CounterMetricFamily(f"{PREFIX}_rejected", "Messages rejected, by reason",
                                       labels=["reason"])
        counts = dict.fromkeys((r.value for r in Reason), 0)
        counts.update(s.get("rejected", {}))
        for reason, value in sorted(counts.items()):
            rejected.add_metric([reason], value)
        yield rejected
        yield GaugeMetricFamily(f"{PREFIX}_lag_seconds", "Receive-to-commit time of the "
                                "oldest message of the last committed batch",
                                value=s.get("lag_ms", 0) / 1000)
        yield GaugeMetricFamily(f"{PREFIX}_queued", "Messages received and not yet committed",
                                value=s.get("queued", 0))
        yield GaugeMetricFamily(f"{PREFIX}_connected", "1 when connected to the broker and "
                                "subscribed", value=1 if s.get("connected") else 0)
        since = s.get("storage_failing_since_ms")
        yield GaugeMetricFamily(f"{PREFIX}_storage_failing", "1 while the store cannot be "
                                "written (retrying)", value=0 if since is None else 1)
        yield GaugeMetricFamily(f"{PREFIX}_storage_failing_since_seconds", "Unix time the "
                                "current storage failure started (0: storage ok)",
                                value=0 if since is None else since / 1000)
        labels = (self.labels() if callable(self.labels) else self.labels) or {}
        info = GaugeMetricFamily(f"{PREFIX}_info", "This ingest worker",
                                 labels=sorted(labels))
        info.add_metric([str(labels[k]) for k in sorted(labels)], 1)
        yield info


def render(stats: Callable[[], dict[str, Any]], labels: Labels = None) -> bytes:
    """The Prometheus text exposition of ``stats()`` (what a scrape returns)."""
    prom = _prometheus()
    registry = prom.CollectorRegistry(auto_describe=False)
    registry.register(IngestCollector(stats, labels))
    return prom.generate_latest(registry)


def parse_address(text: str) -> tuple[str, int]:
    """``PORT`` or ``HOST:PORT`` (``[v6]:PORT``) -> (host, port); ValueError otherwise.
    Port 0 picks a free one."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host = DEFAULT_HOST
    host = host.strip("[]") or DEFAULT_HOST
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ValueError(f"expected PORT or HOST:PORT (port 0..65535), got {text!r}")
    return host, port


class MetricsServer:
    """``GET /metrics`` over HTTP on ``host:port`` in a daemon thread.

    ``start()`` binds (OSError if the port is taken); ``port`` is the bound port
    (useful with 0); ``stop()`` closes it."""

    def __init__(self, stats: Callable[[], dict[str, Any]], port: int,
                 host: str = DEFAULT_HOST, labels: Labels = None) -> None:
        self.stats = stats
        self.host = host
        self.port = port
        self.labels = labels
        self._server: Any = None
        self._thread: Any = None

    def start(self) -> MetricsServer:
        prom = _prometheus()
        registry = prom.CollectorRegistry(auto_describe=False)
        registry.register(IngestCollector(self.stats, self.labels))
        self._server, self._thread = prom.start_http_server(self.port, addr=self.host,
                                                            registry=registry)
        self.port = self._server.server_address[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

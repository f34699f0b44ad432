"""The server's Prometheus metrics, on ``prometheus_client`` with one ``CollectorRegistry`` per app.

Each app owns its registry, so two apps in one process (tests) never share
numbers and nothing lands in the library's global registry. The exposition is
the text format 0.0.4 (``generate_latest``), without the ``*_created``
series (timestamps of when each series first appeared, which no dashboard
here uses).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # the format generate_latest writes

# Seconds: from a cache hit (well under 10 ms) to a big image on a slow CPU.
DEFAULT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Seconds a whole video job takes: a short clip in seconds, a long one in many minutes.
JOB_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0)


class _Registry(CollectorRegistry):
    """A registry whose exposition leaves out the ``*_created`` samples."""

    def collect(self):
        for family in super().collect():
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family


class ServerMetrics:
    """The server's metric families, in one registry (``process_*`` from prometheus_client's ProcessCollector)."""

    def __init__(self) -> None:
        r = self.registry = _Registry()
        self.requests = Counter("animelite_http_requests", "HTTP requests answered, by route and status.",
                                ("method", "route", "status"), registry=r)
        self.request_seconds = Histogram("animelite_http_request_duration_seconds",
                                         "Time from request to response, by route.", ("route",),
                                         buckets=DEFAULT_BUCKETS, registry=r)
        self.stage_seconds = Histogram("animelite_stage_duration_seconds",
                                       "Time in each pipeline stage (queue: waiting for a worker).", ("stage",),
                                       buckets=DEFAULT_BUCKETS, registry=r)
        self.http_in_flight = Gauge("animelite_http_in_flight_requests", "HTTP requests being answered now.",
                                    registry=r)
        self.jobs_running = Gauge("animelite_jobs_running", "Images being stylized by a worker now.", registry=r)
        self.queue_depth = Gauge("animelite_queue_depth", "Accepted images waiting for a free worker.", registry=r)
        self.queue_capacity = Gauge("animelite_queue_capacity",
                                    "Images allowed to wait; beyond this requests get 503.", registry=r)
        self.workers = Gauge("animelite_workers", "Images stylized at once (worker threads).", registry=r)
        self.rejected = Counter("animelite_rejected",
                                "Requests refused for load: busy (queue full, 503) or timeout (504).",
                                ("reason",), registry=r)
        self.cache_hits = Counter("animelite_cache_hits", "Results answered from the cache.", ("tier",), registry=r)
        self.cache_misses = Counter("animelite_cache_misses", "Results not in the cache.", registry=r)
        self.cache_bytes = Gauge("animelite_cache_bytes", "Bytes held by the in-memory results cache.", registry=r)
        self.cache_entries = Gauge("animelite_cache_entries", "Results held by the in-memory cache.", registry=r)
        self.connections_open = Gauge("animelite_connections_open", "Open client connections.", registry=r)
        self.connections_dropped = Counter(
            "animelite_connections_dropped",
            "Connections answered and closed by the slow-client guards: header_timeout and body_timeout (408), "
            "client_limit and server_limit (503).", ("reason",), registry=r)
        self.video_jobs = Gauge("animelite_video_jobs", "Video jobs in the job store, by status.", ("status",),
                                registry=r)
        self.video_frames = Counter("animelite_video_frames", "Video frames stylized, by source (job or live).",
                                    ("source",), registry=r)
        self.video_job_seconds = Histogram("animelite_video_job_duration_seconds",
                                           "Time a video job ran, from its start to its result.",
                                           buckets=JOB_BUCKETS, registry=r)
        self.live_sessions = Gauge("animelite_live_sessions", "Live camera connections open now.", registry=r)
        self.live_dropped = Counter("animelite_live_dropped_frames",
                                    "Live frames dropped: stale (a newer one came), over the rate, or bad.",
                                    ("reason",), registry=r)
        self.ready = Gauge("animelite_ready", "1 once the default style is loaded and warm.", registry=r)
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_cpu_seconds_total, ...

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""A small, thread-safe Prometheus text-format (0.0.4) exposition: counters, gauges, histograms.

Written here rather than depending on prometheus_client: the server needs a
dozen series, and each metric family belongs to one registry per app, so two
apps in one process (tests) never share numbers.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterable, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds: from a cache hit (well under 10 ms) to a big image on a slow CPU.
DEFAULT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape_label(str(v))}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Family:
    kind = ""

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()):
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str] | None) -> tuple[str, ...]:
        labels = labels or {}
        if set(labels) != set(self.label_names):
            raise ValueError(f"{self.name}: expected labels {self.label_names}, got {tuple(labels)}")
        return tuple(str(labels[n]) for n in self.label_names)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Family):
    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()):
        super().__init__(name, help_text, labels)
        self._values: dict[tuple[str, ...], float] = {}
        if not self.label_names:
            self._values[()] = 0.0

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return self.header() + [f"{self.name}{_labels(self.label_names, k)} {_fmt(v)}" for k, v in items]


class Gauge(_Family):
    """A value set by the code, or read from a callback at scrape time."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = (),
                 read: Callable[[], float] | None = None):
        super().__init__(name, help_text, labels)
        self._values: dict[tuple[str, ...], float] = {} if self.label_names else {(): 0.0}
        self._read = read

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        self.inc(-amount, **labels)

    def value(self, **labels: str) -> float:
        if self._read is not None:
            return float(self._read())
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        if self._read is not None:
            return self.header() + [f"{self.name} {_fmt(float(self._read()))}"]
        with self._lock:
            items = sorted(self._values.items())
        return self.header() + [f"{self.name}{_labels(self.label_names, k)} {_fmt(v)}" for k, v in items]


class Histogram(_Family):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = (),
                 buckets: Iterable[float] = DEFAULT_BUCKETS):
        super().__init__(name, help_text, labels)
        self.buckets = tuple(sorted(float(b) for b in buckets))
        # key -> [count per bucket..., +Inf count, sum]
        self._series: dict[tuple[str, ...], list[float]] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            row = self._series.get(key)
            if row is None:
                row = self._series[key] = [0.0] * (len(self.buckets) + 2)
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    row[i] += 1
                    break
            else:
                row[len(self.buckets)] += 1
            row[-1] += value

    def count(self, **labels: str) -> int:
        with self._lock:
            row = self._series.get(self._key(labels))
            return int(sum(row[:-1])) if row else 0

    def render(self) -> list[str]:
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._series.items())
        lines = self.header()
        for key, row in items:
            cumulative = 0.0
            for bound, n in zip(self.buckets + (math.inf,), row[:-1]):
                cumulative += n
                le = 'le="' + _fmt(bound) + '"'
                lines.append(f"{self.name}_bucket{_labels(self.label_names, key, le)} {_fmt(cumulative)}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, key)} {_fmt(row[-1])}")
            lines.append(f"{self.name}_count{_labels(self.label_names, key)} {_fmt(cumulative)}")
        return lines


class Registry:
    def __init__(self) -> None:
        self._families: list[_Family] = []

    def add(self, family: _Family):
        if any(f.name == family.name for f in self._families):
            raise ValueError(f"metric {family.name} is already registered")
        self._families.append(family)
        return family

    def render(self) -> str:
        lines: list[str] = []
        for fam in self._families:
            lines.extend(fam.render())
        return "\n".join(lines) + "\n"


def resident_memory_bytes() -> float:
    """This process's resident set size (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return float(int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


class ServerMetrics:
    """The server's metric families, in one registry."""

    def __init__(self) -> None:
        r = self.registry = Registry()
        self.requests = r.add(Counter("animelite_http_requests_total", "HTTP requests answered, by route and status.",
                                      ("method", "route", "status")))
        self.request_seconds = r.add(Histogram("animelite_http_request_duration_seconds",
                                               "Time from request to response, by route.", ("route",)))
        self.stage_seconds = r.add(Histogram("animelite_stage_duration_seconds",
                                             "Time in each pipeline stage (queue: waiting for a worker).",
                                             ("stage",)))
        self.http_in_flight = r.add(Gauge("animelite_http_in_flight_requests", "HTTP requests being answered now."))
        self.jobs_running = r.add(Gauge("animelite_jobs_running", "Images being stylized by a worker now."))
        self.queue_depth = r.add(Gauge("animelite_queue_depth", "Accepted images waiting for a free worker."))
        self.queue_capacity = r.add(Gauge("animelite_queue_capacity",
                                          "Images allowed to wait; beyond this requests get 503."))
        self.workers = r.add(Gauge("animelite_workers", "Images stylized at once (worker threads)."))
        self.rejected = r.add(Counter("animelite_rejected_total",
                                      "Requests refused for load: busy (queue full, 503) or timeout (504).",
                                      ("reason",)))
        self.cache_hits = r.add(Counter("animelite_cache_hits_total", "Results answered from the cache.", ("tier",)))
        self.cache_misses = r.add(Counter("animelite_cache_misses_total", "Results not in the cache."))
        self.cache_bytes = r.add(Gauge("animelite_cache_bytes", "Bytes held by the in-memory results cache."))
        self.cache_entries = r.add(Gauge("animelite_cache_entries", "Results held by the in-memory cache."))
        self.ready = r.add(Gauge("animelite_ready", "1 once the default style is loaded and warm."))
        self.rss = r.add(Gauge("process_resident_memory_bytes", "Resident memory size in bytes.",
                               read=resident_memory_bytes))

    def render(self) -> str:
        return self.registry.render()

"""Prometheus metrics of one worker process.

Counters count what this process did (Prometheus sums the workers); gauges read the
shared state from the server when scraped (active sessions, lag), so every worker reports
the same whole-deployment value for them: take max, not sum, across workers."""

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from redis.asyncio import Redis

from tagger.health import consumer_groups, group_backlog
from tagger.keys import Keys
from tagger.rules import Counts

_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
# What a control reply's reason means for the session counters.
_CONTROL_OPENED = {"started", "superseded"}
_CONTROL_CLOSED = {"superseded": "superseded", "ended": "explicit"}


class Metrics:
    def __init__(
        self, partitions: Sequence[Keys], sink_names: Sequence[str], tagging: bool
    ) -> None:
        self.partitions = list(partitions)
        self.sink_names = list(sink_names)
        self.tagging = tagging
        self.registry = CollectorRegistry()
        r = self.registry
        self.tagged = Counter("tagger_events_tagged", "Events tagged into a session.", registry=r)
        self.dead = Counter(
            "tagger_dead_letters", "Entries dead-lettered, by reason.", ["reason"], registry=r
        )
        self.duplicates = Counter(
            "tagger_duplicates_dropped", "Events dropped as a repeat record_id.", registry=r
        )
        self.late = Counter(
            "tagger_late_events", "Events older than the latest session.", registry=r
        )
        self.opened = Counter("tagger_sessions_opened", "Sessions opened.", registry=r)
        self.closed = Counter(
            "tagger_sessions_closed", "Sessions closed, by close_reason.", ["reason"], registry=r
        )
        self.batch_size = Histogram(
            "tagger_batch_size", "Entries per tagged batch.", buckets=_BATCH_BUCKETS, registry=r
        )
        self.tag_seconds = Histogram(
            "tagger_tag_seconds",
            "Time to validate and apply one batch (one script call).",
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.wait_seconds = Histogram(
            "tagger_batch_wait_seconds",
            "Age of a batch's oldest entry when its tags were written (XADD to tagged; "
            "server clock against this host's).",
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.active = Gauge("tagger_active_sessions", "Sessions open now.", registry=r)
        self.lag = Gauge(
            "tagger_consumer_lag",
            "Entries a consumer group has not finished: undelivered (never read) or "
            "pending (read, not acknowledged).",
            ["stream", "group", "state"],
            registry=r,
        )
        self.sink_lag = Gauge(
            "tagger_sink_lag",
            "Tagged entries a file sink has not stored yet (summed over partitions).",
            ["sink"],
            registry=r,
        )
        self.stream_length = Gauge(
            "tagger_stream_length", "Entries held in a stream.", ["stream"], registry=r
        )

    def batch_done(self, counts: Counts, size: int, seconds: float, wait_s: float) -> None:
        self.tagged.inc(counts.tagged)
        self.duplicates.inc(counts.duplicates)
        self.late.inc(counts.late)
        self.opened.inc(counts.opened)
        for reason, n in counts.dead_by_reason.items():
            self.dead.labels(reason).inc(n)
        self.closed.labels("timeout").inc(counts.closed - counts.closed_max_duration)
        self.closed.labels("max_duration").inc(counts.closed_max_duration)
        self.batch_size.observe(size)
        self.tag_seconds.observe(seconds)
        self.wait_seconds.observe(max(wait_s, 0.0))

    def swept(self, closed: int) -> None:
        self.closed.labels("timeout").inc(closed)

    def control_done(self, status: str, reason: str) -> None:
        if status != "ok":
            return
        if reason in _CONTROL_OPENED:
            self.opened.inc()
        if reason in _CONTROL_CLOSED:
            self.closed.labels(_CONTROL_CLOSED[reason]).inc()

    async def refresh(self, client: Redis) -> None:
        """Read the shared gauges from the server (on each scrape)."""
        self.active.set(sum([await client.hlen(k.active) for k in self.partitions]))
        sinks = {self.partitions[0].sink_group(s): s for s in self.sink_names}
        sink_lag = dict.fromkeys(self.sink_names, 0)
        for stream, group in consumer_groups(self.partitions, self.tagging, self.sink_names):
            undelivered, pending = await group_backlog(client, stream, group)
            self.lag.labels(stream, group, "undelivered").set(undelivered)
            self.lag.labels(stream, group, "pending").set(pending)
            if group in sinks:
                sink_lag[sinks[group]] += undelivered + pending
        for sink, lag in sink_lag.items():
            self.sink_lag.labels(sink).set(lag)
        for k in self.partitions:
            for stream in (k.input_stream, k.output_stream, k.dead_letter_stream):
                self.stream_length.labels(stream).set(await client.xlen(stream))

"""The worker's periodic INFO line: what the batches of the last interval did."""

import dataclasses
import logging
import time

from tagger.rules import Counts

log = logging.getLogger("tagger")
REPORT_INTERVAL_S = 10.0


def count_fields(counts: Counts) -> dict[str, int]:
    """The counts as log fields (all but the last, dead_by_reason, which is a dict)."""
    return {f.name: getattr(counts, f.name) for f in dataclasses.fields(counts)[:-1]}


class BatchReport:
    """Adds batches up and logs what they did, at most once per REPORT_INTERVAL_S."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._since = time.monotonic()
        self._counts = Counts()
        self._batches = 0
        self._tag_s = 0.0

    def add(self, counts: Counts, seconds: float) -> None:
        self._counts.add(counts)
        self._batches += 1
        self._tag_s += seconds
        elapsed_s = time.monotonic() - self._since
        if elapsed_s < REPORT_INTERVAL_S:
            return
        c = self._counts
        log.info(
            "%d events tagged in %.0f s (%.0f/s), %d dead letters, %d sessions opened; "
            "%d batches, %.1f ms each on average",
            c.tagged,
            elapsed_s,
            c.tagged / elapsed_s,
            c.dead,
            c.opened,
            self._batches,
            self._tag_s / self._batches * 1000,
            extra={
                "interval_s": round(elapsed_s, 3),
                "batches": self._batches,
                "mean_tag_ms": round(self._tag_s / self._batches * 1000, 2),
                **count_fields(c),
            },
        )
        self._reset()

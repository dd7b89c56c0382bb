"""Counting and logging rejections: the first of each reason is logged in full, the rest counted.

A device that sends garbage ten times a second must not flood the log, and must not go unseen:
the first rejection of each reason is logged with its error, and `summary()` (logged by the
service at intervals while anything changed) gives the counts.
"""

from __future__ import annotations

import logging
from collections import Counter

from ingest.decode import Rejection

log = logging.getLogger("moclo.ingest.rejected")


class RejectionLog:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._summarised: Counter[str] = Counter()

    def record(self, rejection: Rejection) -> None:
        reason = rejection.reason.value
        if reason not in self.counts:
            log.warning(
                "rejected (%s) on %s: %s. Further %s rejections are counted, not logged; "
                "all are stored in moclo_rejected.",
                reason,
                rejection.topic,
                rejection.error,
                reason,
            )
        self.counts[reason] += 1

    def summary(self) -> str | None:
        """Counts per reason if any changed since the last summary, else None."""
        if self.counts == self._summarised:
            return None
        self._summarised = self.counts.copy()
        listed = ", ".join(f"{reason}={n}" for reason, n in sorted(self.counts.items()))
        return f"rejected so far: {listed}"

"""Covered tries (``TaskInstance.covered``): the run writes that arm a run's due entry
for the tries a finish queues, so that they need no entry of their own.

Every try an invocation covers is written within its lifetime (``LONGEST_INVOCATION``)
of a stamp on its run (``Arming.counted_at``) that the invocation made, or saw made no
longer than ``ARM_REFRESH`` before, and a run is disarmed only once its stamp is older
than both together, and a minute more (``RUN_QUIET``): whoever disarms has listed every
such try. A finish counted on the run's item (a leaf's, a late one's, a slot's release:
``finish_counts``) stamps it for free; any other finish, and a big run's (counted in
finish tallies), by a write of its own at most once per ``ARM_REFRESH``; an earlier
chunk of a wide fan-out, whose count comes with the last one, by one a chunk.
"""

from __future__ import annotations

from skydag.engine.models import DagRun, FinishGroup, TaskInstance
from skydag.engine.rules import ARM_REFRESH, RUN_CHECK_AFTER
from skydag.ports.store import Arming
from skydag.service.core import Cover, Scheduler


class RunArming:
    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def now(self) -> Arming:
        """A stamp made now: taken just before the write that carries it, so that a later
        write never stamps an earlier time than one another invocation saw."""
        now = self.scheduler.clock.now()
        return Arming(now, now + RUN_CHECK_AFTER)

    def cover(
        self,
        run: DagRun,
        ti: TaskInstance,
        group: FinishGroup | None,
        *,
        counted: bool,
        counts: bool,
    ) -> Cover | None:
        """How the tries ``ti``'s finish queues in this invocation are covered, None when
        they are not. ``counted``: the run as read counts the finish already (a finish
        told again); ``counts``: this invocation counts it (``finish_counts``). On a run
        counting on its item, a count (after the tell, or in a slot's hand-over before
        it) stamps the run. A finish not counted there, and a big run's (counted in
        finish tallies), stamps it with a write of its own before its first ``→ queued``
        write, unless it was seen stamped within ``ARM_REFRESH``."""
        if group is None and counted:
            return None
        if group is None and counts:
            return Cover()
        now = self.scheduler.clock.now()
        if run.counted_at is not None and run.counted_at > now - ARM_REFRESH:
            return Cover()
        return Cover(lambda: self.scheduler.repos.runs.arm(ti, self.now()))

    def arm_chunk(self, ti: TaskInstance) -> None:
        """Before an earlier chunk of a wide fan-out covers its tries (its finish is
        counted with the last chunk, in another invocation)."""
        self.scheduler.repos.runs.arm(ti, self.now())

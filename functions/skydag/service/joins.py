"""Wide joins told through tally items (engine/tallies.py): an upstream's report goes to
its group's tally item, and the join is told the group's summary only when the group
moved in a way its trigger rule can see.

Every report is idempotent: the tally item refuses a stale one and holds a repeated one.
A delivery that dies between the tally's write and the join's is finished by the next
delivery of the same finish (a stream record is redelivered until it is handled), which
finds the report held and tells the join what it does not hold yet; so does the stream
record of a finish the scheduler told at once.
"""

from __future__ import annotations

import logging

from skydag.engine.models import DagRun, TallyWrite, TaskInstance, UpstreamReport
from skydag.engine.scheduler import stale_report
from skydag.engine.tallies import (
    group_size,
    tallied,
    tally_moved,
    tally_news,
    tally_of,
    tally_place,
)
from skydag.limits import TALLY_GROUP
from skydag.service.core import Evaluate, HandOver, Scheduler
from skydag.spec.models import DagSpec

log = logging.getLogger("skydag.scheduler")


class WideJoins:
    # Upstreams per tally group. The reliability simulator makes it small, so that its
    # joins are told through tally items under faults.
    group = TALLY_GROUP

    def __init__(self, scheduler: Scheduler, evaluate: Evaluate) -> None:
        self.scheduler = scheduler
        self.evaluate = evaluate

    def tallied(self, spec: DagSpec, task_id: str) -> bool:
        """Whether ``task_id`` is told its upstreams' states through tally items."""
        return tallied(spec, task_id, self.group)

    def tell(
        self,
        spec: DagSpec,
        run: DagRun,
        join: tuple[str, str, str],
        upstream: tuple[str, UpstreamReport],
        current: TaskInstance | None,
        *,
        told_before: bool,
        owned: bool,
        throttled: set[str],
        handover: HandOver | None = None,
    ) -> TaskInstance | None:
        """Tell a wide join an upstream's report, and decide the join if that moved its
        group; returns the join as its transition wrote it (None: none written).
        ``current``: the join as just read, if it was; ``told_before``: the report was
        most likely told already, so the tally is read first (a refused conditional
        write would cost a write unit)."""
        tasks = self.scheduler.repos.tasks
        upstream_task, report = upstream
        number, position = tally_place(spec, join[2], upstream_task, self.group)
        wrote: TallyWrite | None = None
        if told_before:
            # Eventually consistent (half the read units): a read too old to show the
            # report costs the refused write it was to spare, which reads again.
            held = tasks.get_tally(join, number, consistent=False)
            stored = held.members.get(position)
            if stored == report:
                wrote = TallyWrite(held, held, written=False)
            elif stored is not None and stale_report(stored, report):
                return None
        if wrote is None:
            wrote = tasks.tell_tally(join, number, position, report)
        if wrote is None:
            return None  # stale: the group holds a later report of it, or a clear's mark
        told, _ = self._tell_join(spec, join, number, wrote, current, dag_version=run.dag_version)
        if told is None:
            return None
        return self.evaluate(spec, run, told, owned=owned, throttled=throttled, handover=handover)

    def retire(self, spec: DagSpec, upstream: TaskInstance) -> dict[str, TaskInstance]:
        """Leave a clear's tombstone of ``upstream`` with each downstream task (a wide
        join's in its tally); returns the downstream tasks whose item it moved, as they
        are now (``TaskInstanceStore.retire_upstream``)."""
        children = spec.downstream(upstream.task_id)
        direct = [child for child in children if not self.tallied(spec, child)]
        tasks = self.scheduler.repos.tasks
        retired = tasks.retire_upstream(upstream, direct) if direct else {}
        for child in children:
            if self.tallied(spec, child):
                moved = self._retire_in_tally(spec, upstream, child)
                if moved is not None:
                    retired[child] = moved
        return retired

    def _retire_in_tally(
        self, spec: DagSpec, upstream: TaskInstance, join_id: str
    ) -> TaskInstance | None:
        """A clear's tombstone for ``upstream`` in the wide join's tally: its reports of
        this version or older are refused from now on. Returns the join when that moved
        its group (as the summary's write left it), else None."""
        join = (upstream.dag_id, upstream.run_id, join_id)
        number, position = tally_place(spec, join_id, upstream.task_id, self.group)
        tombstone = UpstreamReport.tombstone(upstream.version)
        wrote = self.scheduler.repos.tasks.tell_tally(join, number, position, tombstone)
        if wrote is None:
            return None  # a later report of it is held: nothing to retire
        told, moved = self._tell_join(
            spec, join, number, wrote, None, dag_version=upstream.dag_version
        )
        return told if moved else None

    def _tell_join(
        self,
        spec: DagSpec,
        join: tuple[str, str, str],
        number: int,
        wrote: TallyWrite,
        current: TaskInstance | None,
        *,
        dag_version: int,
    ) -> tuple[TaskInstance | None, bool]:
        """The join as it is once it holds what its group shows, and whether this wrote
        its summary (``dag_version``: its run's). None: missing, or the tally's write moved
        nothing a trigger rule sees (the join need not be looked at)."""
        tasks = self.scheduler.repos.tasks
        size = group_size(spec, join[2], number, self.group)
        after = tally_of(spec, join[2], number, wrote.after, self.group)
        if wrote.written:
            before = tally_of(spec, join[2], number, wrote.before, self.group)
            if not tally_moved(before, after, size):
                return None, False
            return tasks.record_tally(join, number, after, dag_version=dag_version), True
        # Held already: the delivery that wrote it may have died before telling the join.
        known = current if current is not None else tasks.find(*join)
        if known is None or not tally_news(known.tallies.get(number), after, size):
            return known, False
        log.info("join %s: group %d told again", "/".join(join), number)
        return tasks.record_tally(join, number, after, dag_version=dag_version), True

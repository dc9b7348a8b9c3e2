"""What the stream record of a task instance's write has to do, known when the write is
made (``ChangeReactions.on_task_changed`` does it when the record comes).

A write whose record has nothing to do is marked ``unheard`` (``Transition.unheard``) and
the stream's filter drops its record before any invocation (``wiring``'s task change
filters): a chain task's ``→ queued`` write by the invocation that starts its job, and
its job's ``running`` write, saved a stream processor invocation and its reads each. The
record's only other use, the task's "Task Instance State Change" event, is judged by the
caller (whether a rule on the bus takes it: ``task_event_due`` and the event sink).
"""

from __future__ import annotations

from skydag.engine.mapping import is_expanding
from skydag.engine.models import TaskInstance
from skydag.engine.scheduler import deadline_left_behind, timer_for, told_more
from skydag.engine.states import FINISHED_TASK_STATES, TaskState

T = TaskState


def task_event_due(old: TaskInstance | None, new: TaskInstance) -> bool:
    """Whether the change is news for the task's event: its state changed. A task's first
    write inserts it (it was pending, unwritten): news unless it is still pending (a
    report to a task that waits)."""
    return (T.PENDING if old is None else old.state) != new.state


def is_outcome(state: TaskState) -> bool:
    """Whether a task written in ``state`` has an outcome to count (TaskOutcomes): a
    finished state, or a try that failed and will be retried."""
    return state in FINISHED_TASK_STATES or state is T.UP_FOR_RETRY


def record_has_work(
    old: TaskInstance | None, new: TaskInstance, *, service: bool, finish_told: bool = False
) -> bool:
    """Whether the stream record of the write from ``old`` to ``new`` has work besides the
    task's event (``service``: the task is a ``mode: service`` task; ``finish_told``: the
    writer tells a finish downstream and counts it itself). Unknown states and edges have
    work: only what is known to need nothing is spared.

    - A ``→ queued`` write whose invocation starts the job itself (``claim_owned``): its
      record stands down while that claim runs (``dispatch_claim``), and a claim that
      runs out (the owner died) is the reconciler's to take over, as it is when the
      record comes late; nothing else hangs on it without a deadline or a superseded job.
    - A ``running`` write of a task that is neither a service (its downstream wait for it
      to be up) nor a mapped task's expansion, with no deadline to set or leave behind.
    - A finish told by its writer to all its downstream tasks (a job's end told at once by
      the scheduler: ``go_on``; a wider fan-out's record tells chunks beside it) with no
      deadline to leave behind: the record would tell it again, the backstop of
      an invocation cut short; the job's event is that backstop instead (Lambda retries
      a failed asynchronous invocation, and a job's end found already recorded is told
      again: ``TaskReports.apply``).
    Everything else has work: a finish written by anyone else (told downstream from its
    record), a retry's wait (its slot, its timer), a restart (the superseded job's
    cancel), a chunk of a wide fan-out told (the next chunk)."""
    became = old is None or old.state != new.state or old.try_number != new.try_number
    if not became:
        assert old is not None
        return told_more(old, new)
    if new.superseded_job and (old is None or old.superseded_job != new.superseded_job):
        return True
    if timer_for(new) is not None or deadline_left_behind(old, new) is not None:
        return True
    if new.state is T.QUEUED:
        return not new.claim_owned
    if new.state is T.RUNNING:
        return service or is_expanding(old, new)
    return not (finish_told and new.state in FINISHED_TASK_STATES)

"""Outputs a job publishes (``skydag output set`` / ``taskstate.set_output``): what is
refused, which of two outputs wins, and how the scheduler binds one to its own try."""

from __future__ import annotations

import argparse
import io
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import botocore.client
import pytest

from skydag import taskstate
from skydag.cli.main import main
from skydag.cli.output import MAX_INPUT_CHARACTERS, parse_output, read_output_text
from skydag.engine.models import JobReport, JobStatus, TaskInstance, instance_key
from skydag.engine.rules import may_end_try, try_output
from skydag.engine.states import TaskState
from skydag.ports import MemoryEventSink
from skydag.ports.store import instance_scope, output_key, output_scope
from skydag.service.scheduler_service import SchedulerService
from skydag.spec.models import DagSpec
from skydag.store.memory import MemoryStore
from skydag.targets.base import DispatchRequest, DispatchResult, JobEvent, JobRef, Target
from skydag.taskstate import MAX_VALUE_BYTES, MissingIdentity
from skydag.taskstate import TaskState as Helper

T = TaskState
START = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _no_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing here reaches AWS: validation happens before any call."""

    def refuse(self: Any, operation: str, params: Any) -> Any:
        raise AssertionError(f"an AWS call was made: {operation}")

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", refuse)


# --- what can be an output -------------------------------------------------------------------


def test_an_output_is_compact_sorted_json_and_dates_become_iso() -> None:
    assert taskstate.encode_output({"rows": 3, "day": date(2026, 1, 2)}) == (
        '{"day":"2026-01-02","rows":3}'
    )


def test_an_output_of_exactly_256_kib_is_accepted_and_one_byte_more_refused() -> None:
    overhead = len(json.dumps(""))
    assert len(taskstate.encode_output("x" * (MAX_VALUE_BYTES - overhead))) == MAX_VALUE_BYTES
    with pytest.raises(ValueError, match=r"^job output: the value is 262145 bytes encoded, over"):
        taskstate.encode_output("x" * (MAX_VALUE_BYTES - overhead + 1))


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ({1, 2}, "set is not JSON serializable"),
        (float("nan"), "Out of range float values are not JSON compliant"),
        ({"when": object()}, "object is not JSON serializable"),
        (b"bytes", "bytes is not JSON serializable"),
    ],
)
def test_a_value_that_is_not_json_is_refused_naming_why(value: Any, why: str) -> None:
    with pytest.raises(ValueError, match=r"^job output: the value must be JSON: ") as info:
        taskstate.encode_output(value)
    assert why in str(info.value)


def test_set_output_refuses_bad_values_before_any_call() -> None:
    helper = Helper(dag="etl", run="r1", task="extract", try_number=1)
    with pytest.raises(ValueError, match="must be JSON"):
        helper.set_output({"rows": {3}})


@pytest.mark.parametrize(
    ("missing", "variable"),
    [("dag", "SKYDAG_DAG"), ("run", "SKYDAG_RUN"), ("task", "SKYDAG_TASK"), ("try", "SKYDAG_TRY")],
)
def test_an_output_needs_the_whole_identity_of_the_try(missing: str, variable: str) -> None:
    environ = {"SKYDAG_DAG": "etl", "SKYDAG_RUN": "r1", "SKYDAG_TASK": "extract", "SKYDAG_TRY": "2"}
    del environ[variable]
    helper = Helper.from_env(environ)
    with pytest.raises(
        MissingIdentity, match=f"^{variable} is not set: a job output needs"
    ) as info:
        helper.set_output({"rows": 3})
    assert info.value.part == missing


@pytest.mark.parametrize("text", ["", "0", "-1", "two", "²"])
def test_a_try_variable_that_is_not_a_try_number_counts_as_missing(text: str) -> None:
    helper = Helper.from_env(
        {"SKYDAG_DAG": "d", "SKYDAG_RUN": "r", "SKYDAG_TASK": "t", "SKYDAG_TRY": text}
    )
    with pytest.raises(MissingIdentity, match=r"^SKYDAG_TRY is not set"):
        helper.output_location()


def test_the_output_location_is_the_tries_own_key() -> None:
    helper = Helper.from_env(
        {"SKYDAG_DAG": "d", "SKYDAG_RUN": "r", "SKYDAG_TASK": "t", "SKYDAG_TRY": "3"}
    )
    assert helper.output_location() == (output_scope("d", "r", "t"), output_key(3))
    assert helper.output_location() == ("out#d#r#t", "try/3")
    assert taskstate.output_scope_key("d", "r", "t") == output_scope("d", "r", "t")
    assert taskstate.output_key(3) == output_key(3)


def test_an_instance_of_a_mapped_task_keeps_its_output_and_checkpoints_apart() -> None:
    env = {"SKYDAG_DAG": "d", "SKYDAG_RUN": "r", "SKYDAG_TASK": "t", "SKYDAG_TRY": "1"}
    helper = Helper.from_env({**env, "SKYDAG_MAP_INDEX": "7"})
    instance = instance_key("t", 7)
    assert helper.output_location() == (output_scope("d", "r", instance), output_key(1))
    assert helper.scope_key("instance") == instance_scope("d", "r", instance)
    # The watermark of the task is shared by its instances.
    assert helper.scope_key("task") == Helper.from_env(env).scope_key("task")


# --- the CLI's input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"rows": 3}', {"rows": 3}),
        ("3", 3),
        ('"done"', "done"),
        ("null", None),
        ("[1, 2]", [1, 2]),
    ],
)
def test_the_cli_takes_any_json(text: str, value: Any) -> None:
    assert parse_output(text, "the output argument") == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "done",
            "the output argument is not JSON: Expecting value: line 1 column 1 (char 0) "
            "(a string is quoted: '\"done\"')",
        ),
        ('{"rows": 3', "the output argument is not JSON: Expecting ',' delimiter"),
        ("NaN", "the output argument is not JSON: NaN is not JSON"),
        ("[" * 200 + "]" * 200, "the output argument: nested more than"),
    ],
)
def test_the_cli_refuses_what_is_not_json(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="the output argument") as info:
        parse_output(text, "the output argument")
    assert str(info.value).startswith(message)


def _args(value: str | None = None, file: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(value=value, file=file)


def test_the_cli_reads_the_argument_a_file_or_stdin(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    path.write_text('{\n  "rows": 3\n}\n', encoding="utf-8")
    assert read_output_text(_args("3"), io.StringIO()) == ("3", "the output argument")
    assert read_output_text(_args(file=str(path)), io.StringIO()) == (
        '{\n  "rows": 3\n}\n',
        f"the output in {path}",
    )
    assert read_output_text(_args(file="-"), io.StringIO("[1]")) == ("[1]", "the output on stdin")


def test_the_cli_wants_exactly_one_source_and_bounded_input(tmp_path: Path) -> None:
    for args in (_args(), _args("3", "-")):
        with pytest.raises(ValueError, match=r"^give the output as JSON or with --file F"):
            read_output_text(args, io.StringIO())
    with pytest.raises(ValueError, match=r"^cannot read the output in .*missing\.json"):
        read_output_text(_args(file=str(tmp_path / "missing.json")), io.StringIO())
    huge = io.StringIO(" " * (MAX_INPUT_CHARACTERS + 1))
    with pytest.raises(ValueError, match=r"^the output on stdin: more than"):
        read_output_text(_args(file="-"), huge)


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["done"], "skydag output set: error: the output argument is not JSON"),
        ([json.dumps("x" * MAX_VALUE_BYTES)], "skydag output set: error: job output: the value is"),
        (["{}", "--file", "-"], "skydag output set: error: give the output as JSON or with"),
    ],
)
def test_a_bad_output_exits_2_with_one_line(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "SKYDAG_DAG": "d",
        "SKYDAG_RUN": "r",
        "SKYDAG_TASK": "t",
        "SKYDAG_TRY": "1",
    }.items():
        monkeypatch.setenv(name, value)
    assert main(["output", "set", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(error)
    assert err.count("\n") == 1


def test_outside_a_job_the_cli_names_the_missing_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SKYDAG_DAG", "SKYDAG_RUN", "SKYDAG_TASK", "SKYDAG_TRY"):
        monkeypatch.delenv(name, raising=False)
    assert main(["output", "set", "{}", "--dag", "d", "--run", "r", "--task", "t"]) == 2
    assert capsys.readouterr().err == (
        "skydag output set: error: no try id for the output: pass --try or set SKYDAG_TRY\n"
    )


# --- which output a try keeps (engine) ---------------------------------------------------------


def _report(status: JobStatus = JobStatus.SUCCEEDED, try_number: int = 1, **keys: Any) -> JobReport:
    return JobReport("etl", "r1", "extract", try_number, status, **keys)


@pytest.mark.parametrize(
    ("service", "published", "kept"),
    [
        (None, None, None),
        ({"from": "lambda"}, None, {"from": "lambda"}),
        (None, {"rows": 3}, {"rows": 3}),
        ({"from": "lambda"}, {"rows": 3}, {"rows": 3}),  # what the job published wins
        ({"from": "lambda"}, 0, 0),  # a falsy output is still an output
    ],
)
def test_a_published_output_wins_over_the_services(service: Any, published: Any, kept: Any) -> None:
    assert try_output(_report(output=service, published_output=published)) == kept


def test_only_a_report_that_can_end_the_current_try_reads_the_published_output() -> None:
    running = TaskInstance("etl", "r1", "extract", state=T.RUNNING, try_number=2)
    assert may_end_try(running, _report(try_number=2))
    assert may_end_try(running, _report(JobStatus.FAILED, try_number=2))
    assert not may_end_try(running, _report(JobStatus.RUNNING, try_number=2))
    assert not may_end_try(running, _report(try_number=1))  # an older try's report
    finished = TaskInstance("etl", "r1", "extract", state=T.SUCCESS, try_number=2)
    assert not may_end_try(finished, _report(try_number=2))  # a duplicate


# --- the scheduler binds a published output to its try (memory store) ----------------------


@dataclass
class Clock:
    moment: datetime = START

    def now(self) -> datetime:
        return self.moment


@dataclass
class Jobs:
    """A remote service whose jobs end when the test says; dispatch is idempotent."""

    requests: dict[str, DispatchRequest] = field(default_factory=dict)

    def target_for(self, kind: str) -> Target:
        return self

    def dispatch(self, request: DispatchRequest) -> DispatchResult:
        job_id = f"job-{request.task_id}-{request.try_number}"
        self.requests[job_id] = request
        return DispatchResult(job_id=job_id)

    def describe(self, job: JobRef) -> JobReport | None:
        return None

    def cancel(self, job: JobRef, reason: str) -> None:
        return None

    def event(self, job_id: str, status: JobStatus = JobStatus.SUCCEEDED) -> JobEvent:
        request = self.requests[job_id]
        code = 0 if status is JobStatus.SUCCEEDED else 1
        return JobEvent(
            "batch",
            status,
            request.token,
            job_id=job_id,
            exit_code=code,
            task_key=request.task_key_in_events,
            try_number=request.try_number_in_events,
        )


class Scheduler:
    def __init__(self) -> None:
        self.store = MemoryStore(record_changes=True)
        self.clock = Clock()
        self.jobs = Jobs()
        self.service = SchedulerService(self.store, self.jobs, self.clock, MemoryEventSink())
        spec = {
            "dag": "etl",
            "defaults": {"retries": 1, "retry_delay": "1m"},
            "tasks": {
                "extract": {"batch": {"job_queue": "q", "job_definition": "d"}},
                "load": {
                    "depends_on": ["extract"],
                    "batch": {
                        "job_queue": "q",
                        "job_definition": "d",
                        "command": ["load", "{{ outputs.extract | default('none') }}"],
                    },
                },
            },
        }
        self.store.dags.save_version(
            DagSpec.model_validate(spec), source="test", sha256=None, now=self.clock.now()
        )

    def settle(self) -> None:
        for _ in range(200):
            changes = self.store.take_changes()
            if not changes:
                return
            for change in changes:
                if change.kind == "run":
                    self.service.on_run_changed(change.old, change.new)
                else:
                    self.service.on_task_changed(change.old, change.new)
        raise AssertionError("the scheduler never settled")

    def publish(self, try_number: int, value: Any) -> None:
        """What the job of ``try_number`` does with `skydag output set` (same item)."""
        self.store.state.put(
            output_scope("etl", "r1", "extract"),
            output_key(try_number),
            value,
            now=self.clock.now(),
        )

    def finish(self, job_id: str, status: JobStatus = JobStatus.SUCCEEDED) -> None:
        self.service.on_job_event(self.jobs.event(job_id, status))
        self.settle()

    def task(self, task_id: str) -> TaskInstance:
        return self.store.tasks.get("etl", "r1", task_id)

    def load_command(self) -> list[str]:
        load = self.task("load")
        command: list[str] = self.jobs.requests[f"job-load-{load.try_number}"].target["command"]
        return command


@pytest.fixture
def scheduler() -> Scheduler:
    env = Scheduler()
    env.service.trigger("etl", run_id="r1")
    env.settle()
    return env


def test_the_output_a_try_published_reaches_the_downstream_template(scheduler: Scheduler) -> None:
    scheduler.publish(1, {"rows": 3, "files": ["a.parquet"]})
    scheduler.finish("job-extract-1")

    assert scheduler.task("extract").output == {"rows": 3, "files": ["a.parquet"]}
    assert scheduler.load_command() == ["load", '{"files":["a.parquet"],"rows":3}']
    # The service's own success event, again and late, carries no output: it erases nothing.
    scheduler.finish("job-extract-1")
    assert scheduler.task("extract").output == {"rows": 3, "files": ["a.parquet"]}


def test_a_batch_jobs_end_reads_the_try_and_its_published_output_at_once(
    scheduler: Scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batch's event names the task instance and the try (the job's echoed identity): the
    try and what its job published are read in one round trip, and the output is not
    read again; nothing published is a read too (no second look)."""
    looked_up: list[str] = []
    state_get = scheduler.store.state.get

    def counted(scope: str, key: str) -> Any:
        looked_up.append(key)
        return state_get(scope, key)

    scheduler.publish(1, {"rows": 3})
    monkeypatch.setattr(scheduler.store.state, "get", counted)
    scheduler.finish("job-extract-1")
    assert scheduler.task("extract").output == {"rows": 3}
    assert looked_up == []
    scheduler.finish("job-load-1")  # load published nothing
    assert (scheduler.task("load").state, scheduler.task("load").output) == (T.SUCCESS, None)
    assert looked_up == []


def test_a_try_reads_only_its_own_output_never_an_older_tries(scheduler: Scheduler) -> None:
    scheduler.publish(1, {"rows": 1})
    scheduler.finish("job-extract-1", JobStatus.FAILED)
    assert scheduler.task("extract").output == {"rows": 1}  # a failed try keeps its output
    scheduler.clock.moment += timedelta(minutes=1)
    scheduler.service.reconcile()
    scheduler.settle()
    assert (scheduler.task("extract").try_number, scheduler.task("extract").output) == (2, None)

    # Try 1's job, still running somewhere, publishes again: under try 1's key.
    scheduler.publish(1, {"rows": 99})
    scheduler.finish("job-extract-2")  # try 2 published nothing
    assert scheduler.task("extract").output is None
    assert scheduler.load_command() == ["load", "none"]


def test_a_cleared_tasks_old_try_cannot_become_the_new_tries_output(scheduler: Scheduler) -> None:
    scheduler.publish(1, {"rows": 3})
    scheduler.finish("job-extract-1")
    scheduler.finish("job-load-1")
    scheduler.service.clear("etl", "r1", "extract", downstream=True)
    scheduler.settle()
    assert scheduler.task("extract").try_number == 2

    scheduler.publish(1, {"rows": 99})  # the cleared try's job, late
    scheduler.publish(2, {"rows": 4})
    scheduler.finish("job-extract-1")  # and its success event, late: ignored
    assert (
        scheduler.task("extract").state is T.RUNNING or scheduler.task("extract").state is T.QUEUED
    )
    scheduler.finish("job-extract-2")
    assert scheduler.task("extract").output == {"rows": 4}
    assert scheduler.load_command() == ["load", '{"rows":4}']

"""The hostile-input corpus (issue 9): every case in ``corpus/*.yaml`` fed to a real entry
point, under a time and a memory bound, with proof that nothing else changed.

A case names its entry point, its input and the one-line error it must give, and where
that error surfaces (see corpus/README.md). The cases run in a worker process (this file,
run as a script) on one moto stack shared by all of them: the stack's DAG loader,
scheduler and stream processor handlers, ``skydag`` in-process, the task state API. Before
the first case the worker loads the corpus' fixture DAGs and starts a run of the control
DAG (its first task done, the next one waiting for a signal); after every case it compares
the tables (DAGs, versions, runs, task instances, task state) and the schedules with what
they were, and only the case's own DAG may differ.

Each case's wall time and the growth of the worker's peak resident memory are measured
(``/proc/self/clear_refs`` resets the peak before each case) and asserted below the
bounds; an address-space limit (``RLIMIT_AS``) stops a runaway allocation, and a case that
hangs or kills the worker is reported as such and the worker restarted for the rest.

    PYTHONPATH=functions:. pytest -q -p no:randomly tests/reliability/test_corpus.py
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

CORPUS = Path(__file__).resolve().parent / "corpus"
ROOT = Path(__file__).resolve().parents[2]
HANDLER_TESTS = ROOT / "tests" / "integration" / "handlers"

# CPU seconds a case may take (its worker's process time): the work a hostile input can
# cause. Wall time also counts what else the machine runs; a case over HANG_SECONDS of
# wall time is killed below all the same.
TIME_BOUND_SECONDS = 5.0
MEMORY_BOUND_MB = 512
# A case still running after this long is killed (with the worker) and reported as hung.
HANG_SECONDS = 30.0
# The address space a case may add before allocations fail (above the bound it is held to).
ADDRESS_SPACE_HEADROOM = 1024 * 1024 * 1024

ENTRIES = ("dag_loader", "validate", "scheduler", "stream_processor", "task", "taskstate", "cli")
ENVELOPE_KEYS = ("id", "source", "detail-type", "detail", "time", "account", "region", "resources")
SURFACES = ("import_error", "cli_error", "bad_event", "ignored", "task_reason", "value_error")


# --- the cases -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    entry: str
    input: Any
    error: str | None
    surface: str
    retry: bool = False
    changes: tuple[str, ...] = ()
    xfail: str | None = None
    exit_code: int | None = None

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.id}/{self.entry}"


# A DAG file case goes to the DAG loader and to `skydag validate` unless it says otherwise.
DEFAULT_ENTRIES = {"dag_files": ("dag_loader", "validate"), "templates": ("task",)}
SURFACE_OF_ENTRY = {
    "dag_loader": "import_error",
    "validate": "cli_error",
    "task": "task_reason",
    "taskstate": "value_error",
    "cli": "cli_error",
}


def load_cases() -> list[Case]:
    cases: list[Case] = []
    for path in sorted(CORPUS.glob("*.yaml")):
        if path.stem == "fixtures":
            continue
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        defaults = document.get("defaults") or {}
        for raw in document["cases"]:
            spec = {**defaults, **raw}
            entries = spec.get("entries") or (
                [spec["entry"]] if spec.get("entry") else list(DEFAULT_ENTRIES[path.stem])
            )
            for entry in entries:
                assert entry in ENTRIES, f"{path.name}: {spec['id']}: unknown entry {entry!r}"
                surface = spec.get("surface") or SURFACE_OF_ENTRY.get(entry, "bad_event")
                assert surface in SURFACES, f"{path.name}: {spec['id']}: surface {surface!r}"
                cases.append(
                    Case(
                        id=spec["id"],
                        kind=path.stem,
                        entry=entry,
                        input=spec["input"],
                        error=spec.get("error"),
                        surface=surface,
                        retry=bool(spec.get("retry", False)),
                        changes=tuple(spec.get("changes") or ()),
                        xfail=spec.get("xfail"),
                        exit_code=spec.get("exit_code"),
                    )
                )
    keys = [case.key for case in cases]
    assert len(keys) == len(set(keys)), "case ids must be unique within a corpus file"
    return cases


def fixture_dags() -> dict[str, str]:
    document = yaml.safe_load((CORPUS / "fixtures.yaml").read_text(encoding="utf-8"))
    return dict(document["dags"])


# --- hostile values, written short ------------------------------------------------------------
#
# {$repeat: [TEXT, N]}   TEXT N times           {$concat: [A, B, ...]}  the parts joined
# {$deep: N}             JSON text nested N deep ({"a": ... 1 ...}), spliced in raw
# {$raw: TEXT}           TEXT spliced into the JSON document as it is (not quoted)


def expand(value: Any) -> Any:
    """The value with its generators expanded ($raw and $deep stay as Raw markers)."""
    if isinstance(value, Mapping):
        if len(value) == 1:
            [(name, arg)] = value.items()
            if name == "$repeat":
                text, times = expand(arg[0]), int(arg[1])
                return text * times
            if name == "$concat":
                return "".join(str(expand(part)) for part in arg)
            if name == "$deep":
                depth = int(arg)
                return Raw('{"a":' * depth + "1" + "}" * depth)
            if name == "$raw":
                return Raw(str(expand(arg)))
        return {key: expand(item) for key, item in value.items()}
    if isinstance(value, list):
        return [expand(item) for item in value]
    return value


@dataclass(frozen=True)
class Raw:
    text: str


def json_text(value: Any) -> str:
    """JSON of ``value`` with every Raw spliced in unquoted (deep or malformed JSON)."""
    spliced: dict[str, str] = {}

    def mark(node: Any) -> Any:
        if isinstance(node, Raw):
            token = f"@@raw{len(spliced)}@@"
            spliced[token] = node.text
            return token
        if isinstance(node, Mapping):
            return {key: mark(item) for key, item in node.items()}
        if isinstance(node, list):
            return [mark(item) for item in node]
        return node

    text = json.dumps(mark(value))
    for token, raw in spliced.items():
        text = text.replace(json.dumps(token), raw)
    return text


# --- the test (parent process) ----------------------------------------------------------------

CASES = load_cases()


def _param(case: Case) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
    return pytest.param(case, id=case.key, marks=marks)


@pytest.fixture(scope="module")
def outcomes() -> dict[str, dict[str, Any]]:
    """Every case run by the worker: key -> what it measured and saw."""
    return run_corpus(CASES)


def run_corpus(cases: list[Case]) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    remaining = [case.key for case in cases]
    with tempfile.TemporaryDirectory(prefix="skydag-corpus-") as folder:
        while remaining:
            done = _run_worker(remaining, Path(folder), results)
            remaining = [key for key in remaining if key not in results]
            if not done and not remaining:
                break
    return results


def _run_worker(keys: list[str], folder: Path, results: dict[str, dict[str, Any]]) -> bool:
    """One worker over ``keys``; a case that hangs or kills it is recorded as such."""
    out = folder / f"results-{uuid.uuid4().hex}.jsonl"
    log = folder / "worker.log"
    (folder / "keys.json").write_text(json.dumps(keys))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "functions"), str(ROOT)])}
    with log.open("ab") as log_file:
        worker = subprocess.Popen(  # this very file, with the same Python
            [sys.executable, __file__, str(folder / "keys.json"), str(out)],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            env=env,
            cwd=str(folder),
        )
        started: tuple[str, float] | None = None
        seen = 0
        while True:
            code = worker.poll()
            text = out.read_text() if out.exists() else ""
            # Whole lines only: the worker may be writing the last one right now (a line
            # cut short by a worker that died is its case's, which then runs again).
            lines = text[: text.rfind("\n") + 1].splitlines()
            for line in lines[seen:]:
                record = json.loads(line)
                if record["event"] == "start":
                    started = (record["key"], time.monotonic())
                elif record["event"] == "done":
                    results[record["key"]] = record
                    started = None
            seen = len(lines)
            if code is not None:
                break
            if started and time.monotonic() - started[1] > HANG_SECONDS:
                worker.kill()
                worker.wait()
                results[started[0]] = {"key": started[0], "fatal": f"hung over {HANG_SECONDS} s"}
                return False
            time.sleep(0.02)
    if started is not None:
        tail = log.read_text(errors="replace")[-2000:]
        results[started[0]] = {"key": started[0], "fatal": f"worker died ({code}): {tail}"}
        return False
    if code != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise AssertionError(f"the corpus worker failed before any case ({code}):\n{tail}")
    return True


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_hostile_input_gets_its_one_line_error_and_changes_nothing_else(
    case: Case, outcomes: dict[str, dict[str, Any]]
) -> None:
    outcome = outcomes[case.key]
    assert "fatal" not in outcome, outcome.get("fatal")
    assert outcome["error"] is None, outcome["error"]
    assert outcome["seconds"] <= TIME_BOUND_SECONDS, f"took {outcome['seconds']:.2f} CPU-s"
    assert outcome["peak_mb"] <= MEMORY_BOUND_MB, f"peak grew by {outcome['peak_mb']:.0f} MB"
    assert outcome["changed"] == [], f"changed outside the case: {outcome['changed']}"
    assert outcome["control"] == "unchanged", outcome["control"]


def test_the_corpus_covers_every_kind_of_input() -> None:
    kinds = {case.kind for case in CASES}
    assert kinds >= {
        "dag_files",
        "templates",
        "conf",
        "run_ids",
        "signals",
        "commands",
        "job_events",
        "stream_images",
        "task_state",
    }
    assert len({(case.kind, case.id) for case in CASES}) >= 100
    assert all(case.error for case in CASES if case.surface != "ignored")


# --- the worker (this file run as a script) ----------------------------------------------------


def _status_kb(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


class _Records(logging.Handler):
    """The skydag log records of one case (the handlers' "dropped bad event" lines)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _one_line(text: str) -> bool:
    return "\n" not in text.strip() and "Traceback" not in text


class Worker:
    """One moto stack, the fixture DAGs and the control run; runs cases one by one."""

    def __init__(self, scratch: Path) -> None:
        sys.path.insert(0, str(HANDLER_TESTS))
        import handler_support as support

        self.support = support
        os.environ.update(
            {
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
                "POWERTOOLS_TRACE_DISABLED": "true",
                "POWERTOOLS_LOG_LEVEL": "WARNING",
                **support.FUNCTION_ENV,
            }
        )
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "SKYDAG_STACK"):
            os.environ.pop(name, None)
        self.scratch = scratch
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Worker:
        from skydag.dev.embedded import embedded_aws
        from skydag.handlers import _runtime
        from skydag.settings import Settings
        from skydag.store.dag_files import bind_dag_files
        from skydag.store.models import bind_models, create_tables

        self._stack.enter_context(embedded_aws())
        self.settings = Settings()
        create_tables(self.settings)
        bind_models(self.settings)
        bind_dag_files(self.settings)
        _runtime.reset()
        self.stack = self.support.Stack(self.settings)
        # The tap also takes commands: a refused CLI command must put nothing on the bus.
        self.stack.events.put_rule(
            Name="tap-commands",
            EventBusName=self.support.BUS,
            EventPattern=json.dumps({"source": ["skydag.command"]}),
        )
        tap_arn = self.stack.sqs.get_queue_attributes(
            QueueUrl=self.stack.tap_url, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        self.stack.events.put_targets(
            Rule="tap-commands",
            EventBusName=self.support.BUS,
            Targets=[{"Id": "tap", "Arn": tap_arn}],
        )
        from skydag.handlers import dag_loader, scheduler, stream_processor

        self.dag_loader, self.scheduler = dag_loader, scheduler
        self.stream_processor = stream_processor
        self.context = self.support.LambdaContext()
        self.records = _Records()
        logging.getLogger("skydag").addHandler(self.records)
        self._sequence = 0
        self._set_up_fixtures()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    # --- the stack's event sources ----------------------------------------------------------

    def upload(self, key: str, body: bytes) -> dict[str, Any]:
        etag = self.stack.s3.put_object(Bucket=self.support.BUCKET, Key=key, Body=body)["ETag"]
        self._sequence += 1
        event = self.support.s3_event(
            "Object Created", key, sequencer=f"{self._sequence:08X}", etag=etag.strip('"')
        )
        result: dict[str, Any] = self.dag_loader.lambda_handler(event, self.context)
        return result

    def send(self, *bodies: str) -> dict[str, Any]:
        batch = self.support.sqs_batch(*(self.support.sqs_message(body) for body in bodies))
        with contextlib.redirect_stdout(io.StringIO()):  # EMF metrics
            response: dict[str, Any] = self.scheduler.lambda_handler(batch, self.context)
        return response

    def streams(self, batch: dict[str, Any]) -> dict[str, Any]:
        with contextlib.redirect_stdout(io.StringIO()):
            response: dict[str, Any] = self.stream_processor.lambda_handler(batch, self.context)
        return response

    def pump(self) -> list[dict[str, Any]]:
        """Deliver the tables' stream records until nothing moves (as Lambda would)."""
        failures: list[dict[str, Any]] = []
        tables = (self.settings.tables.runs, self.settings.tables.task_instances)
        for _ in range(50):
            moved = False
            for table in tables:
                batch = self.stack.stream_batch(table)
                if batch["Records"]:
                    moved = True
                    failures += self.streams(batch)["batchItemFailures"]
            if not moved:
                return failures
        raise AssertionError("the streams did not settle")

    def command(self, detail_type: str, detail: dict[str, Any]) -> dict[str, Any]:
        event = self.envelope("skydag.command", detail_type, detail)
        return self.send(json.dumps(event))

    def envelope(self, source: str, detail_type: str, detail: Any) -> dict[str, Any]:
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": detail_type,
            "source": source,
            "account": self.support.ACCOUNT,
            "time": "2026-11-22T08:15:00Z",
            "region": self.support.REGION,
            "resources": [],
            "detail": detail,
        }

    # --- the fixtures and the control run ---------------------------------------------------

    def _set_up_fixtures(self) -> None:
        for dag_id, text in fixture_dags().items():
            result = self.upload(f"dags/{dag_id}.yaml", text.encode())
            assert result["outcome"] == "loaded", result
        response = self.command("Trigger DAG", {"dag": "control", "run_id": "control_run"})
        assert response == {"batchItemFailures": []}, response
        assert self.pump() == []
        control = self.control()
        states = {ti["task"]: ti["state"] for ti in control["tasks"]}
        assert control["run"] == "running", control
        assert states == {"first": "success", "hold": "waiting", "after": "pending"}, states
        self.stack.bus_events()
        self.baseline = self.snapshot()
        self.control_baseline = control

    def control(self) -> dict[str, Any]:
        from skydag.store.repositories import Repositories

        repos = Repositories()
        run = repos.runs.get("control", "control_run")
        tasks = repos.tasks.list_for_run("control", "control_run")
        head = repos.dags.get("control")
        return {
            "head": [head.current_version, head.paused, head.import_error],
            "run": run.state.value,
            "run_version": run.version,
            "tasks": sorted(
                (
                    {"task": ti.task_id, "state": ti.state.value, "version": ti.version}
                    for ti in tasks
                ),
                key=lambda ti: ti["task"],
            ),
        }

    def snapshot(self) -> dict[str, str]:
        """Every item of skydag's tables and every schedule, as text, by table and key."""
        found: dict[str, str] = {}
        tables = self.settings.tables
        for table in (
            tables.dags,
            tables.dag_versions,
            tables.runs,
            tables.task_instances,
            tables.task_state,
        ):
            pages = self.stack.dynamodb.get_paginator("scan").paginate(TableName=table)
            for page in pages:
                for item in page["Items"]:
                    key = "|".join(
                        str(next(iter(item[name].values())))
                        for name in sorted(item)
                        if name in ("dag_id", "version", "run_id", "run_key", "task_id")
                        or name in ("scope", "key")
                    )
                    found[f"{table}|{key}"] = json.dumps(item, sort_keys=True, default=str)
        schedules = self.stack.scheduler.list_schedules(GroupName=self.support.GROUP)
        for schedule in schedules.get("Schedules", []):
            found[f"schedule|{schedule['Name']}"] = schedule.get("State", "")
        return found

    # --- one case ---------------------------------------------------------------------------

    def run(self, case: Case) -> dict[str, Any]:
        self.records.records.clear()
        self.stack.bus_events()
        self.surfaced: str | None = None
        error: str | None = None
        try:
            error = getattr(self, f"_entry_{case.entry}")(case)
        except Exception as exc:  # a case must never raise: report it as its failure
            import traceback

            error = "raised: " + "".join(traceback.format_exception(exc))[-3000:]
        return {"error": error, "surfaced": self.surfaced}

    def check(self, case: Case, message: str | None, what: str) -> str | None:
        """None when ``message`` is one line matching the case's error."""
        self.surfaced = message
        if message is None:
            return f"no error surfaced ({what})"
        if not _one_line(message):
            return f"not one line ({what}): {message[:2000]!r}"
        if case.error and not re.search(case.error, message):
            return f"{what} {message[:1000]!r} does not match {case.error!r}"
        return None

    def _entry_dag_loader(self, case: Case) -> str | None:
        from skydag.store.dag_files import DagFileRepository

        data = _yaml_bytes(case.input)
        key = f"dags/corpus-{case.id}.yaml"
        result = self.upload(key, data)
        if result.get("outcome") != "import_error":
            return f"the loader said {str(result)[:500]}"
        errors = result["errors"]
        if not all(_one_line(line) for line in errors):
            return f"errors not one line each: {errors!r}"[:2000]
        events = [e for e in self.stack.bus_events() if e.get("detail-type") == "DAG Import Error"]
        if len(events) != 1 or events[0]["detail"]["errors"] != errors:
            return f"expected one DAG Import Error event with the errors, got {events!r}"[:2000]
        records = [r for r in DagFileRepository().list_import_errors() if r.source.endswith(key)]
        stored = records[0].import_error if records else None
        if stored is None:
            return "no import error stored for the file"
        return self.check(case, " | ".join(errors), "import error")

    def _entry_validate(self, case: Case) -> str | None:
        path = self.scratch / f"corpus-{case.id}.yaml"
        path.write_bytes(_yaml_bytes(case.input))
        code, out, err = self.cli("validate", str(path))
        if code != 1:
            return f"validate exited {code} (stdout {out[:300]!r}, stderr {err[:300]!r})"
        lines = err.strip().splitlines()
        if "Traceback" in err or not all(line.startswith(f"{path}: error: ") for line in lines):
            return f"validate's stderr is not one 'FILE: error:' line per problem: {err[:2000]!r}"
        matching = [line for line in lines if not case.error or re.search(case.error, line)]
        return None if matching else self.check(case, lines[0], "validate's error")

    def cli(self, *argv: str) -> tuple[int, str, str]:
        from skydag.cli.main import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(argv))
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
        return code, out.getvalue(), err.getvalue()

    def _entry_cli(self, case: Case) -> str | None:
        argv = [str(expand(arg)) for arg in case.input["argv"]]
        code, _, err = self.cli(*argv)
        expected = case.exit_code if case.exit_code is not None else 2
        if code != expected:
            return f"exited {code}, not {expected} (stderr {err[:500]!r})"
        leaked = self.stack.bus_events()
        if leaked:
            return f"put on the bus: {leaked!r}"[:1000]
        return self.check(case, err.strip(), "stderr")

    def _sqs_body(self, case: Case) -> str:
        spec = case.input
        if "body" in spec:
            return str(expand(spec["body"]))
        if "base" in spec:  # a canonical event from events/, then changed
            event = self.support.load_event(spec["base"])
            event["id"] = str(uuid.uuid4())
        else:
            event = self.envelope("skydag.command", "", {})
        event.update(expand({k: v for k, v in spec.items() if k in ENVELOPE_KEYS}))
        for path, value in (spec.get("set") or {}).items():
            *parents, last = path.split(".")
            node = event
            for part in parents:
                node = node[int(part)] if isinstance(node, list) else node[part]
            node[int(last) if isinstance(node, list) else last] = expand(value)
        for name in spec.get("omit") or ():
            event.pop(name, None)
        return json_text(event)

    def invoke(self, event: dict[str, Any]) -> bool:
        """The scheduler invoked with ``event``, as a job-event rule does; whether it raised
        (Lambda would retry it)."""
        with contextlib.redirect_stdout(io.StringIO()):  # EMF metrics
            try:
                self.scheduler.lambda_handler(event, self.context)
            except Exception:
                return True
        return False

    def _entry_scheduler(self, case: Case) -> str | None:
        body = self._sqs_body(case)
        event = _invoking_event(body)
        if event is not None:  # a job's end its rule delivers: the function is invoked
            raised = self.invoke(event)
            if raised != case.retry:
                return f"raised: {raised}, expected {'a retry' if case.retry else 'none'}"
        else:  # anything else travels through the scheduler queue
            failed = self.send(body)["batchItemFailures"]
            if bool(failed) != case.retry:
                wanted = "a retry" if case.retry else "none"
                return f"batchItemFailures {failed!r}, expected {wanted}"
        failures = self.pump()
        if failures:
            return f"the streams failed after the event: {failures!r}"
        return self._dropped(case)

    def _dropped(self, case: Case) -> str | None:
        dropped = [
            str(getattr(r, "error", ""))
            for r in self.records.records
            if r.getMessage() == "dropped bad event"
        ]
        retried = [r.getMessage() for r in self.records.records if "will retry" in r.getMessage()]
        if case.surface == "ignored":
            if dropped or retried:
                return f"expected no error, got {dropped or retried!r}"[:2000]
            return None
        if case.retry:
            return None if retried else "expected a retried record"
        if len(dropped) != 1:
            return f"expected one dropped bad event, got {dropped!r} (retried: {retried!r})"[:2000]
        return self.check(case, dropped[0], "dropped event's error")

    def _entry_stream_processor(self, case: Case) -> str | None:
        spec = expand(case.input)
        tables = self.settings.tables
        table = {"runs": tables.runs, "task_instances": tables.task_instances}.get(
            spec.get("table", "runs"), spec.get("table")
        )
        arn = (
            self.stack.dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
            if table in (tables.runs, tables.task_instances)
            else f"arn:aws:dynamodb:us-east-1:123456789012:table/{table}/stream/2026-01-01T00:00"
        )
        if "from_item" in spec:  # a stored item's image, then changed
            item = self.stack.dynamodb.get_item(
                TableName=table, Key=spec["from_item"], ConsistentRead=True
            )["Item"]
            item.update(spec.get("set") or {})
            for name in spec.get("remove") or ():
                item.pop(name, None)
            spec["new_image"] = item
        data: dict[str, Any] = {"SequenceNumber": "100", "StreamViewType": "NEW_AND_OLD_IMAGES"}
        for name, field_name in (("new_image", "NewImage"), ("old_image", "OldImage")):
            if name in spec:
                data[field_name] = spec[name]
        record = {
            "eventID": uuid.uuid4().hex,
            "eventName": spec.get("event_name", "MODIFY"),
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "eventSourceARN": arn,
            "dynamodb": data,
        }
        response = self.streams({"Records": [record]})
        if bool(response["batchItemFailures"]) != case.retry:
            return f"batchItemFailures {response['batchItemFailures']!r}"
        return self._dropped(case)

    def _entry_task(self, case: Case) -> str | None:
        from skydag.store.repositories import Repositories

        dag_id = "tpl_" + re.sub(r"[^a-z0-9_]", "_", case.id.lower())[:60]
        template = expand(case.input["template"])
        spec = {
            "dag": dag_id,
            "params": case.input.get("params", {"n": 3, "s": "abc"}),
            "tasks": {"t": {"retries": 0, "emit": {"detail-type": "corpus", "detail": {}}}},
        }
        spec["tasks"]["t"]["emit"]["detail"]["v"] = template
        if "emit" in case.input:
            spec["tasks"]["t"]["emit"] = expand(case.input["emit"])
        result = self.upload(f"dags/{dag_id}.yaml", yaml.safe_dump(spec).encode())
        if result.get("outcome") != "loaded":
            return f"the template DAG did not load: {str(result)[:1000]}"
        response = self.command("Trigger DAG", {"dag": dag_id, "run_id": "r"})
        if response["batchItemFailures"]:
            return f"the trigger was retried: {response!r}"
        failures = self.pump()
        if failures:
            return f"the streams failed: {failures!r}"
        [ti] = Repositories().tasks.list_for_run(dag_id, "r")
        if ti.state.value != "failed":
            return f"task t is {ti.state.value}, not failed (reason {ti.reason!r})"
        return self.check(case, ti.reason, "task reason")

    def _entry_taskstate(self, case: Case) -> str | None:
        from datetime import timedelta

        from skydag.taskstate import TaskState

        spec = expand(case.input)
        state = TaskState(
            dag="control", task="hold", run="control_run", table=self.settings.tables.task_state
        )
        ttl = spec.get("ttl_days")
        try:
            state.put(
                spec["key"],
                spec.get("value", 1),
                scope=spec.get("scope", "task"),
                ttl=None if ttl is None else timedelta(days=ttl),
            )
        except ValueError as error:
            return self.check(case, str(error), "ValueError")
        return "the value was stored"


def _yaml_bytes(spec: Mapping[str, Any]) -> bytes:
    text = str(expand(spec["yaml"]))
    return text.encode(spec.get("encoding", "utf-8"))


@contextlib.contextmanager
def _bounded() -> Iterator[dict[str, float]]:
    """Measure a case: wall time and peak resident memory growth, with the address space
    capped a little above the memory bound so a runaway allocation fails early."""
    measured: dict[str, float] = {}
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM)
    rss = _status_kb("VmRSS")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _status_kb("VmSize") * 1024 + ADDRESS_SPACE_HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard < 0 else min(cap, hard), hard))
    started = time.process_time()
    try:
        yield measured
    finally:
        measured["seconds"] = time.process_time() - started
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        measured["peak_mb"] = max(_status_kb("VmHWM") - rss, 0) / 1024


def _diff(before: Mapping[str, str], after: Mapping[str, str], allowed: list[str]) -> list[str]:
    keys = set(before) | set(after)
    changed = sorted(k for k in keys if before.get(k) != after.get(k))
    return [k for k in changed if not any(token in k for token in allowed)]


def worker_main(keys_file: str, out_file: str) -> None:
    by_key = {case.key: case for case in CASES}
    keys = json.loads(Path(keys_file).read_text())
    with (
        tempfile.TemporaryDirectory() as scratch,
        Worker(Path(scratch)) as worker,
        open(out_file, "a", buffering=1) as out,
    ):
        before = worker.baseline
        for key in keys:
            case = by_key[key]
            out.write(json.dumps({"event": "start", "key": key}) + "\n")
            with _bounded() as measured:
                result = worker.run(case)
            after = worker.snapshot()
            own = [f"corpus-{case.id}", "tpl_" + re.sub(r"[^a-z0-9_]", "_", case.id.lower())]
            changed = _diff(before, after, [*own, *case.changes])
            control = worker.control()
            result.update(
                measured,
                event="done",
                key=key,
                changed=changed,
                control="unchanged"
                if control == worker.control_baseline
                else f"changed: {control!r}",
            )
            out.write(json.dumps(result) + "\n")
            before = after


def _invoking_event(body: str) -> dict[str, Any] | None:
    """The event in ``body`` if a rule that invokes the scheduler would deliver it."""
    from skydag import wiring
    from skydag.limits import loads_bounded

    try:
        event = loads_bounded(body, "corpus event")
    except ValueError:
        return None
    return event if isinstance(event, dict) and wiring.invokes_scheduler(event) else None


if __name__ == "__main__":
    worker_main(sys.argv[1], sys.argv[2])

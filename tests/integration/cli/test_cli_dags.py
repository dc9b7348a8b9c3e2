"""`skydag dags push|list|pause|unpause` against moto."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cli_support import CHAIN, DAILY, Loader, Skydag

from skydag.cli import remote
from skydag.store.dag_files import DagFile

ROOT = Path(__file__).resolve().parents[3]
BROKEN = str(ROOT / "tests" / "fixtures" / "dags" / "broken.yaml")
WritesFile = Callable[..., str]


def _keys(skydag: Skydag) -> list[str]:
    """The DAG files in the bucket (the versions' spec objects live beside them)."""
    settings = skydag.settings
    listing = skydag.s3.list_objects_v2(Bucket=settings.dag_bucket, Prefix=settings.dag_prefix)
    return sorted(item["Key"] for item in listing.get("Contents", []))


# --- push ----------------------------------------------------------------------------------


def test_push_uploads_each_valid_file_under_the_prefix(
    skydag: Skydag, dag_file: WritesFile
) -> None:
    chain, daily = dag_file(CHAIN, "chain.yaml"), dag_file(DAILY, "daily.yml")
    result = skydag.run("dags", "push", chain, daily, "--output", "json")
    assert result.code == 0, result.err
    assert _keys(skydag) == ["dags/chain.yaml", "dags/daily.yml"]
    body = skydag.s3.get_object(Bucket="skydag-dags", Key="dags/chain.yaml")["Body"].read()
    assert body == Path(chain).read_bytes()
    pushed = result.json()
    assert [(p["file"], p["source"], p["dag"], p["status"]) for p in pushed] == [
        (chain, "s3://skydag-dags/dags/chain.yaml", "chain", "uploaded"),
        (daily, "s3://skydag-dags/dags/daily.yml", "daily", "uploaded"),
    ]
    text = skydag.run("dags", "push", chain)
    assert "uploaded" in text.out
    assert "s3://skydag-dags/dags/chain.yaml (DAG chain, 2 tasks)" in text.out


def test_push_uploads_nothing_when_any_file_is_invalid(
    skydag: Skydag, dag_file: WritesFile
) -> None:
    good = dag_file(CHAIN, "chain.yaml")
    result = skydag.run("dags", "push", good, BROKEN)
    assert result.code == 1
    assert _keys(skydag) == []
    problems = [line for line in result.err.splitlines() if line.startswith(BROKEN)]
    assert len(problems) >= 3  # every problem, in `skydag validate`'s form
    assert all(": error: " in line for line in problems)
    assert "nothing uploaded" in result.err


def test_push_refuses_what_the_loader_would_not_load(
    skydag: Skydag, dag_file: WritesFile, subtests: pytest.Subtests
) -> None:
    for files, message in [
        ([("chain.txt", CHAIN)], "only loads .yaml and .yml files"),
        ([("a.yaml", CHAIN), ("b.yaml", CHAIN)], "DAG 'chain' is also defined by"),
        ([("c.yaml", CHAIN), ("sub/c.yaml", CHAIN.replace("chain", "other"))], "same file name"),
    ]:
        with subtests.test(files=[name for name, _ in files]):
            paths = [dag_file(text, name) for name, text in files]
            result = skydag.run("dags", "push", *paths)
            assert result.code == 1
            assert message in result.err
            assert _keys(skydag) == []


def test_push_refuses_a_dag_that_another_live_file_defines(
    skydag: Skydag, dag_file: WritesFile
) -> None:
    Loader(skydag.settings).put("dags/the_chain.yaml", CHAIN)
    result = skydag.run("dags", "push", dag_file(CHAIN, "chain.yaml"))
    assert result.code == 1
    assert "DAG 'chain' is already defined by s3://skydag-dags/dags/the_chain.yaml" in result.err
    assert _keys(skydag) == ["dags/the_chain.yaml"]
    # The same file name replaces it: that is an ordinary new version.
    assert skydag.run("dags", "push", dag_file(CHAIN, "the_chain.yaml")).code == 0


def test_push_wait_follows_the_loader(
    skydag: Skydag, dag_file: WritesFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    loader = Loader(skydag.settings)
    monkeypatch.setattr(remote, "pause", lambda seconds: loader.load_everything())
    result = skydag.run("dags", "push", dag_file(CHAIN, "chain.yaml"), "--wait", "--output", "json")
    assert result.code == 0, result.err
    [pushed] = result.json()
    assert pushed["status"] == "loaded"
    assert pushed["version"] == 1
    assert pushed["import_error"] is None
    changed = CHAIN.replace("size: 1", "size: 2")
    text = skydag.run("dags", "push", dag_file(changed, "chain.yaml"), "--wait")
    assert text.code == 0, text.err
    assert "s3://skydag-dags/dags/chain.yaml: loaded as DAG chain v2" in text.out


def test_push_wait_reports_a_file_the_loader_refused(
    skydag: Skydag, dag_file: WritesFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = dag_file(CHAIN, "chain.yaml")
    loader = Loader(skydag.settings)

    def refuse(seconds: float) -> None:
        import hashlib

        # A loader that judges differently (a newer version of skydag, say) refused it.
        loader.files.save(
            DagFile(
                key="dags/chain.yaml",
                source="s3://skydag-dags/dags/chain.yaml",
                dag="chain",
                sha256=hashlib.sha256(Path(path).read_bytes()).hexdigest(),
                import_error="s3://skydag-dags/dags/chain.yaml: error: refused",
            ),
            now=datetime.now(UTC),
        )

    monkeypatch.setattr(remote, "pause", refuse)
    result = skydag.run("dags", "push", path, "--wait")
    assert result.code == 1
    assert "the DAG loader refused it:\ns3://skydag-dags/dags/chain.yaml: error: refused" in (
        result.out
    )


def test_push_wait_gives_up_after_its_timeout(
    skydag: Skydag, dag_file: WritesFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(remote, "pause", lambda seconds: None)
    result = skydag.run("dags", "push", dag_file(CHAIN, "chain.yaml"), "--wait", "--timeout", "0")
    assert result.code == 1
    assert "has not processed s3://skydag-dags/dags/chain.yaml" in result.err


# --- list ----------------------------------------------------------------------------------


def test_list_shows_every_dag_and_every_file_that_did_not_load(skydag: Skydag) -> None:
    loader = Loader(skydag.settings)
    loader.put("dags/chain.yaml", CHAIN)
    # A DAG with signal subscriptions: their items share the dags table.
    loader.put("dags/daily.yaml", DAILY + "on: [{source: [ml.trainer]}]\n")
    # A file that never loaded, and one whose DAG keeps its last good version.
    loader.put("dags/broken.yaml", Path(BROKEN).read_text(encoding="utf-8"))
    loader.put("dags/daily.yaml", DAILY.replace("@daily", "@sometimes"))
    # A deleted file retires its DAG: not listed.
    loader.put("dags/gone.yaml", "dag: gone\ntasks: {a: {noop: {}}}\n")
    loader.delete("dags/gone.yaml")

    result = skydag.run("dags", "list", "--output", "json")
    assert result.code == 0, result.err
    listed = result.json()
    assert [(d["dag"], d["version"], d["source"]) for d in listed] == [
        ("broken", None, "s3://skydag-dags/dags/broken.yaml"),
        ("chain", 1, "s3://skydag-dags/dags/chain.yaml"),
        ("daily", 1, "s3://skydag-dags/dags/daily.yaml"),
    ]
    broken, chain, daily = listed
    assert broken["paused"] is False
    assert "s3://skydag-dags/dags/broken.yaml: error:" in broken["import_error"]
    assert chain == {
        "dag": "chain",
        "version": 1,
        "paused": False,
        "source": "s3://skydag-dags/dags/chain.yaml",
        "import_error": None,
    }
    assert "@sometimes" in daily["import_error"]

    text = skydag.run("dags", "list")
    lines = text.out.splitlines()
    assert lines[0].split() == ["DAG", "VERSION", "PAUSED", "SOURCE", "STATUS"]
    assert lines[2].split() == ["chain", "1", "no", "s3://skydag-dags/dags/chain.yaml", "ok"]
    assert "import error" in lines[1]
    assert any("@sometimes" in line for line in lines[4:])


def test_list_of_nothing_is_empty(skydag: Skydag) -> None:
    assert skydag.run("dags", "list", "--output", "json").json() == []
    assert "no DAGs" in skydag.run("dags", "list").err


# --- pause / unpause -----------------------------------------------------------------------


def test_pause_and_unpause_are_commands_to_the_scheduler(
    skydag: Skydag, subtests: pytest.Subtests
) -> None:
    skydag.load_dag(CHAIN)
    for verb, detail_type in [("pause", "Pause DAG"), ("unpause", "Unpause DAG")]:
        with subtests.test(verb=verb):
            result = skydag.run("dags", verb, "chain", "--output", "json")
            assert result.code == 0, result.err
            [event] = skydag.bus_events()
            assert event["source"] == "skydag.command"
            assert event["detail-type"] == detail_type
            assert event["detail"] == {"dag": "chain"}
            assert result.json() == {
                "command": detail_type,
                "event_id": event["id"],
                "detail": {"dag": "chain"},
            }
    # Principle 1: the CLI asked; it changed nothing itself.
    assert skydag.repos.dags.get("chain").paused is False


def test_pausing_an_unknown_dag_sends_nothing(skydag: Skydag) -> None:
    result = skydag.run("dags", "pause", "nope")
    assert result.code == 1
    assert "skydag dags pause: error: DAG 'nope' not found" in result.err
    assert skydag.bus_events() == []


# --- delete --------------------------------------------------------------------------------


def test_delete_asks_the_scheduler_then_removes_the_file(
    skydag: Skydag, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from skydag.dev.embedded import EmbeddedSkydag

    loader = Loader(skydag.settings)
    loader.put("dags/chain.yaml", CHAIN)
    result = skydag.run("dags", "delete", "chain", "--cancel-runs", "--output", "json")
    assert result.code == 0, result.err
    [event] = skydag.bus_events()
    assert event["detail-type"] == "Delete DAG"
    assert event["detail"] == {"dag": "chain", "version": 1, "cancel_runs": True}
    source = f"s3://{skydag.settings.dag_bucket}/dags/chain.yaml"
    assert result.json()["removed_file"] == source
    assert _keys(skydag) == []  # the file; its versions' specs stay, as their items do
    # The CLI asked; the scheduler retires it.
    assert skydag.repos.dags.get("chain").current_version == 1
    scheduler = EmbeddedSkydag(skydag.settings, log_dir=tmp_path)
    try:
        scheduler.route(event)
    finally:
        scheduler.close()
    assert skydag.repos.dags.get("chain").current_version is None
    assert [dag["dag"] for dag in skydag.run("dags", "list", "--output", "json").json()] == []
    # Uploading the file again brings it back, as the next version.
    loader.put("dags/chain.yaml", CHAIN)
    assert skydag.run("dags", "list", "--output", "json").json()[0]["version"] == 2


def test_delete_keeps_history_and_refuses_an_unknown_dag(skydag: Skydag) -> None:
    skydag.load_dag(DAILY, source="s3://elsewhere/daily.yaml")
    kept = skydag.run("dags", "delete", "daily", "--keep-history")
    assert kept.code == 0, kept.err
    assert "asked the scheduler to delete DAG daily v1" in kept.out
    assert "removed" not in kept.out  # not a file of the DAG bucket: left alone
    [event] = skydag.bus_events()
    assert event["detail"] == {"dag": "daily", "version": 1, "cancel_runs": False}
    unknown = skydag.run("dags", "delete", "nope")
    assert unknown.code == 1
    assert "skydag dags delete: error: DAG 'nope' not found" in unknown.err
    assert skydag.bus_events() == []

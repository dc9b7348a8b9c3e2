"""for_each end to end in the local cloud (`skydag dev run`): one task lists N items, a
mapped task (5 at once) runs one Lambda stand-in per item, and the join sees all N outputs in item
order; the run JSON lists the mapped task and each of its instances.

The local cloud spends about half a CPU-second per instance (moto behind HTTP, one
stream record at a time), so make test maps 12 items; `make test-large` runs the
full-size case, 500 items 50 at once (SKYDAG_MAPPED_ITEMS=500)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from skydag.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
ITEMS = int(os.environ.get("SKYDAG_MAPPED_ITEMS", "12"))
# Few at once in make test (max_parallel holds them back); 50 at once for the large case.
PARALLEL = 5 if ITEMS <= 20 else 50

DAG = f"""
dag: mapped_e2e
params: {{n: {ITEMS}}}
tasks:
  list:
    lambda: {{function_name: list-items}}
    local: {{output: {{items: "{{{{ range(params.n) | list }}}}"}}}}
  score:
    depends_on: [list]
    for_each: "{{{{ outputs.list['items'] }}}}"
    max_parallel: {PARALLEL}
    lambda: {{function_name: score, payload: {{item: "{{{{ item }}}}"}}}}
    local: {{output: "{{{{ item }}}}-{{{{ task.map_index }}}}"}}
  join:
    depends_on: [score]
    lambda: {{function_name: join, payload: {{n: "{{{{ outputs.score | length }}}}"}}}}
    local:
      command: [python, -c, "import sys; print('joined', sys.argv[1])",
                "{{{{ outputs.score | join(',') }}}}"]
"""


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def test_a_mapped_task_runs_once_per_item_and_its_join_sees_every_output(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "mapped.yaml"
    path.write_text(DAG, encoding="utf-8")
    started = time.monotonic()

    code = main(["dev", "run", str(path), "--output", "json", "--log-dir", str(tmp_path)])

    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    run = json.loads(out)
    assert run["state"] == "success"
    entries = [(t["task"], t["map_index"], t["state"], t["try_number"]) for t in run["tasks"]]
    assert entries[:2] == [("list", None, "success", 1), ("score", None, "success", 1)]
    assert entries[2 : 2 + ITEMS] == [("score", i, "success", 1) for i in range(ITEMS)]
    assert entries[-1] == ("join", None, "success", 1)
    log = (tmp_path / "mapped_e2e" / run["run_id"] / "join.1.log").read_text()
    assert f"joined {','.join(f'{i}-{i}' for i in range(ITEMS))}" in log
    print(f"{ITEMS} instances in {time.monotonic() - started:.1f}s", file=sys.stderr)

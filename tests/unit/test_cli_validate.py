"""`skydag validate` and `skydag schema`: exit codes, the line format, the JSON forms."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skydag.cli.main import main
from skydag.spec.loader import parse_yaml

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "dags"
MINIMAL = str(FIXTURES / "minimal.yaml")
DESIGN = str(FIXTURES / "design_example.yaml")
BROKEN = str(FIXTURES / "broken.yaml")


def test_valid_files_exit_0_and_say_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", MINIMAL, DESIGN]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{MINIMAL}: ok (1 task)", f"{DESIGN}: ok (2 tasks)"]
    assert err == ""


def test_invalid_file_exits_1_with_one_line_per_problem(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["validate", BROKEN]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 4
    assert all(line.startswith(f"{BROKEN}: error: ") for line in lines)
    assert f"{BROKEN}: error: task 'load', field 'lambda.paylod' (line 11): unknown key" in err


def test_missing_file_is_a_problem(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    assert main(["validate", MINIMAL, missing]) == 1
    out, err = capsys.readouterr()
    assert out == f"{MINIMAL}: ok (1 task)\n"
    assert err == f"{missing}: error: cannot read file: No such file or directory\n"


def test_directory_is_a_problem(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["validate", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith(f"{tmp_path}: error: cannot read file: ")


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--output", "json", MINIMAL, BROKEN]) == 1
    out, err = capsys.readouterr()
    assert err == ""
    results = json.loads(out)
    assert results[0] == {"file": MINIMAL, "valid": True, "errors": []}
    assert results[1]["file"] == BROKEN
    assert results[1]["valid"] is False
    assert results[1]["errors"][1] == {
        "message": "must be a valid integer, unable to parse string as an integer (got 'lots')",
        "task": "extract",
        "field": "retries",
        "line": 8,
    }


def test_json_output_all_valid_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--output", "json", MINIMAL]) == 0
    assert json.loads(capsys.readouterr().out) == [{"file": MINIMAL, "valid": True, "errors": []}]


def test_schema_is_json_schema_2020_12(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"]
    assert schema["title"]
    task = schema["$defs"]["TaskSpec"]["properties"]
    assert "lambda" in task
    assert "lambda_" not in task
    assert "detail-type" in schema["$defs"]["EmitTarget"]["properties"]
    assert schema["required"] == ["dag", "tasks"]


def test_schema_accepts_the_examples_and_rejects_a_typo(
    capsys: pytest.CaptureFixture[str],
) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in [*sorted((ROOT / "examples" / "dags").glob("*.yaml")), Path(DESIGN)]:
        data = parse_yaml(path.read_bytes(), str(path))  # YAML 1.2, as editors read it
        errors = [e.message for e in validator.iter_errors(data)]
        assert errors == [], (path.name, errors)
    typo = {"dag": "x", "tasks": {"a": {"noop": None, "retires": 3}}}
    assert list(validator.iter_errors(typo))

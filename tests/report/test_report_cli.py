"""``ragtune report RUN_DIR`` rebuilds the report from the run directory alone."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ragtune.cli.app import app
from ragtune.errors import ConfigError


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def test_report_rebuilds_all_three_files(runner, run_copy):
    for name in ("report.json", "report.md", "report.html"):
        (run_copy / name).unlink()
    result = runner.invoke(app, ["-q", "report", str(run_copy)])
    assert result.exit_code == 0, result.output
    for name in ("report.json", "report.md", "report.html"):
        assert (run_copy / name).is_file(), name
        assert name in result.stdout
    assert "report.html" in result.stdout and "file://" in result.stdout
    data = json.loads((run_copy / "report.json").read_text(encoding="utf-8"))
    assert data["verdict"]["candidate"] == "fine-tuned"
    assert (run_copy / "report.html").read_text(encoding="utf-8").startswith("<!doctype html>")


def test_report_works_after_the_run_moved(runner, run_copy, tmp_path):
    moved = run_copy.rename(tmp_path / "elsewhere")
    result = runner.invoke(app, ["-q", "report", str(moved)])
    assert result.exit_code == 0, result.output
    data = json.loads((moved / "report.json").read_text(encoding="utf-8"))
    assert data["run_dir"] == str(moved.resolve()) and data["examples"]["deltas"]


def test_missing_run_dir_is_a_config_error(runner, tmp_path):
    result = runner.invoke(app, ["-q", "report", str(tmp_path / "nope")])
    assert isinstance(result.exception, ConfigError)
    assert "not a directory" in str(result.exception) and "nope" in str(result.exception)


def test_a_folder_that_is_not_a_run_is_a_config_error(runner, tmp_path):
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    result = runner.invoke(app, ["-q", "report", str(tmp_path)])
    assert isinstance(result.exception, ConfigError)
    assert "no manifest.json" in str(result.exception)
    assert not (tmp_path / "report.html").exists()


def test_the_command_line_exits_with_code_2_on_a_bad_run_dir(tmp_path, monkeypatch, capsys):
    from ragtune.cli.app import main

    monkeypatch.setattr("sys.argv", ["ragtune", "-q", "report", str(tmp_path / "nope")])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    assert "not a directory" in " ".join(capsys.readouterr().err.split())  # rich wraps long lines

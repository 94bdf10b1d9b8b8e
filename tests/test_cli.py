"""The command line itself: help on every verb, version, and the error boundary."""

from __future__ import annotations

import pytest

from aiflow_cli import __version__
from aiflow_cli.cli.main import app


@pytest.mark.parametrize("verb", [[], ["profile"], ["split"], ["split", "plan"], ["split", "bottleneck"],
                                  ["split", "exits"], ["split", "verify"], ["split", "speculative"], ["compress"],
                                  ["serve-pair"], ["serve-pair", "server"], ["serve-pair", "device"],
                                  ["serve-pair", "generate"], ["serve-pair", "link"], ["serve-pair", "bench"]])
def test_every_command_has_help(runner, verb):
    result = runner.invoke(app, [*verb, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_version_prints_package_version(runner):
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_a_usage_error_is_one_line_with_where_to_look(runner):
    result = runner.invoke(app, ["serve-pair", "bench", "somewhere", "--requests", "many"])
    assert result.exit_code == 2
    (line,) = [x for x in result.stderr.splitlines() if x.strip()]
    assert "--requests" in line and "aiflow serve-pair bench --help" in line


def test_atomically_written_files_get_the_mode_open_would_give(tmp_path):
    import os

    from aiflow_cli.atomic import write_text_atomic

    mask = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "r.json", "{}")
    finally:
        os.umask(mask)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644

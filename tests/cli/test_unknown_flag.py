"""An unknown flag shows the command's own usage, not the top-level one (QA I, 10: `distill report --runs runs`)."""
from __future__ import annotations

import pytest

from distill.cli import main as cli


@pytest.mark.parametrize("argv, prog, flag", [(["report", "--runs", "runs"], "distill report", "--runs"),
                                              (["cache", "inspect", "c", "--bogus"], "distill cache inspect", "--bogus")])
def test_an_unknown_flag_shows_the_commands_usage(argv, prog, flag, capsys):
    with pytest.raises(SystemExit) as e:
        cli(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.startswith(f"usage: {prog} ") and f"{prog}: error: unrecognized arguments: {flag}" in err, err


def test_an_unknown_top_level_flag_keeps_the_top_level_usage(capsys):
    with pytest.raises(SystemExit):
        cli(["--bogus"])
    assert "distill: error: unrecognized arguments: --bogus" in capsys.readouterr().err

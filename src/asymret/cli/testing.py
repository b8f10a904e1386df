"""What a test of the command line needs (as :mod:`typer.testing` for any typer app): run ``asymret`` in-process and
check that a command succeeded, or failed the way every command fails on bad input — exit code 2, one ``error:``
line, no traceback."""
from __future__ import annotations

from typer.testing import CliRunner, Result

from . import app

__all__ = ["invoke", "ok", "fails_cleanly"]

_runner = CliRunner()


def invoke(*args: object) -> Result:
    """``asymret ARGS…`` in this process (arguments turned into strings: paths may be passed as they are)."""
    return _runner.invoke(app, [str(a) for a in args])


def ok(*args: object) -> str:
    """The output of a command that must succeed (its output and exception in the assertion message otherwise)."""
    result = invoke(*args)
    assert result.exit_code == 0, f"asymret {' '.join(map(str, args))} failed ({result.exit_code}):\n{result.output}\n{result.exception!r}"
    return result.output


def fails_cleanly(*args: object) -> str:
    """Exit code 2, an ``error:`` line, no traceback; returns the output with whitespace collapsed."""
    result = invoke(*args)
    assert result.exit_code == 2, f"expected exit code 2, got {result.exit_code}:\n{result.output}\n{result.exception!r}"
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "error:" in result.output and "Traceback" not in result.output
    return " ".join(result.output.split())

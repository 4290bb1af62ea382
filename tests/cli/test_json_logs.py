"""``--log-format json``: every line a command writes to stderr is a JSON object, its
last words (the ``tether: error:`` line) and Python's warnings included, so a log
pipeline that parses each line of a worker's stderr as JSON loses none of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

WARNING_APP = '''
import logging
import warnings

logging.getLogger("warning_app").warning("%d items", "SECRET-ARG")

warnings.warn("old API, use the new one", DeprecationWarning)
warnings.warn("careful: a library's warning")

from tests.cli.cli_app import app

logging.getLogger("warning_app").warning("where from?", stack_info=True)
'''


def _tether(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "warning_app.py").write_text(WARNING_APP)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        (str(ROOT / "src"), str(ROOT), str(tmp_path))))
    env.pop("TETHER_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "tether", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)


def _json_lines(stderr: str) -> list[dict[str, object]]:
    lines = stderr.splitlines()
    assert lines, "nothing logged"
    docs = []
    for line in lines:
        try:
            docs.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}\n{stderr}") from None
    assert all({"ts", "level", "logger", "message"} <= set(d) for d in docs), docs
    return docs


def test_the_error_line_and_warnings_are_json_lines(tmp_path: Path) -> None:
    """A worker whose store cannot be opened wrote its one ``tether: error:`` line as
    text, the app's warnings as two text lines each, and a log call of the app that
    cannot be formatted as Python's dozen-line ``--- Logging error ---``, among JSON
    lines."""
    proc = _tether(tmp_path, "worker", "warning_app:app", "--log-format", "json",
                   "--db", f"sqlite:///{tmp_path}/no/such/folder/x.db")
    assert proc.returncode == 1, proc
    docs = _json_lines(proc.stderr)
    errors = [d for d in docs if d["level"] == "error" and d["logger"] == "tether"]
    assert len(errors) == 1, docs
    message = str(errors[0]["message"])
    assert message.startswith("tether: error: ") and "no folder" in message
    warned = [d for d in docs if d["logger"] == "py.warnings"]
    assert len(warned) == 1 and "careful: a library's warning" in str(warned[0]["message"])
    bad = [d for d in docs if d["logger"] == "tether.logging"]
    assert len(bad) == 1 and "'%d items'" in str(bad[0]["message"]), docs
    assert "warning_app.py:5" in str(bad[0]["message"]) and "SECRET-ARG" not in proc.stderr
    # A call's stack_info, which the text format prints (JSON lines dropped it).
    asked = [d for d in docs if d["message"] == "where from?"]
    assert len(asked) == 1 and "warning_app.py" in str(asked[0].get("stack")), docs
    assert str(asked[0]["stack"]).startswith("Stack (most recent call last):")


def test_a_store_that_is_not_there_is_a_json_error_line(tmp_path: Path) -> None:
    proc = _tether(tmp_path, "show", "nope", "--log-format", "json",
                   "--db", f"sqlite:///{tmp_path}/s.db")
    docs = _json_lines(proc.stderr)
    assert proc.returncode == 1 and len(docs) == 1, proc
    assert docs[0]["level"] == "error" and "no Tether store" in str(docs[0]["message"])


def test_text_logs_keep_the_plain_error_line(tmp_path: Path) -> None:
    proc = _tether(tmp_path, "show", "nope", "--db", f"sqlite:///{tmp_path}/s.db")
    assert proc.returncode == 1
    assert proc.stderr.startswith("tether: error: no Tether store at ")
    assert proc.stderr.count("\n") == 1 and proc.stderr.endswith("\n")


def test_a_flag_argparse_refuses_is_a_json_error_line(tmp_path: Path) -> None:
    """A typo in a worker's flags: argparse's usage lines and its error line were text,
    whatever ``--log-format``."""
    for log_format in (["--log-format", "json"], ["--log-format=json"]):
        proc = _tether(tmp_path, "worker", "warning_app:app", *log_format, "--concurency", "8")
        docs = _json_lines(proc.stderr)
        assert proc.returncode == 2 and len(docs) == 1, proc
        assert docs[0]["level"] == "error"
        # In the command's name, as docs/telemetry.md shows it (argparse said it in
        # `tether`'s, with the usage of `tether` itself, until 2026-12-06).
        assert docs[0]["message"] == ("tether worker: error: unrecognized arguments: "
                                      "--concurency 8")
    proc = _tether(tmp_path, "worker", "warning_app:app", "--concurency", "8")
    assert proc.returncode == 2 and proc.stderr.startswith("usage: tether worker [-h]")
    assert proc.stderr.splitlines()[-1] == ("tether worker: error: unrecognized arguments: "
                                            "--concurency 8")
    proc = _tether(tmp_path, "db", "backup", "--zzz", str(tmp_path / "b.db"))
    assert proc.returncode == 2 and proc.stderr.startswith("usage: tether db backup [-h]")
    assert proc.stderr.splitlines()[-1] == "tether db backup: error: unrecognized arguments: --zzz"


def test_an_unexpected_exception_is_one_json_line_with_its_traceback(tmp_path: Path) -> None:
    """An exception no error line was written for (a bug: here the app's own
    ``worker``) printed Python's traceback, a dozen text lines; in JSON it is one line
    with the traceback under ``exception``, exit 1 as Python's."""
    (tmp_path / "odd_app.py").write_text(
        "import tether\n\n\nclass Odd(tether.App):\n    def worker(self, *a, **k):\n"
        "        raise RuntimeError('a bug in the app')\n\n\napp = Odd()\n")
    proc = _tether(tmp_path, "worker", "odd_app:app", "--log-format", "json",
                   "--db", f"sqlite:///{tmp_path}/o.db")
    docs = _json_lines(proc.stderr)
    assert proc.returncode == 1 and len(docs) == 1, proc
    assert docs[0]["message"] == "tether: error: RuntimeError: a bug in the app"
    assert "Traceback" in str(docs[0]["exception"]) and "odd_app.py" in str(docs[0]["exception"])
    proc = _tether(tmp_path, "worker", "odd_app:app", "--db", f"sqlite:///{tmp_path}/o.db")
    assert proc.returncode == 1 and proc.stderr.startswith("Traceback")

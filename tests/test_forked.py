"""The suite's fork server (tests/zygote.py, tests/forked.py): a forked process looks,
to the test and to itself, like one started by a new interpreter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests import forked

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, os, sys
print(json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd(),
                  "argv": sys.argv, "env": os.environ.get("PROBE"), "path0": sys.path[0],
                  "extra": "/probe/extra" in sys.path, "stdin": sys.stdin.read(),
                  "main": __name__, "tether": "tether" in sys.modules}))
print("to stderr", file=sys.stderr)
sys.exit(int(os.environ.get("PROBE_EXIT", "0")))
"""


@pytest.fixture
def probe(tmp_path: Path) -> Path:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    return script


@pytest.mark.skipif(forked.EXEC_ONLY, reason="TETHER_TEST_EXEC=1: no fork server")
def test_a_forked_script_sees_its_own_arguments_environment_and_streams(
        probe: Path, tmp_path: Path) -> None:
    import json

    env = dict(os.environ, PROBE="yes", PROBE_EXIT="3", PYTHONPATH="/probe/extra")
    proc = forked.Popen([sys.executable, str(probe), "a", "b"], cwd=tmp_path, env=env,
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True)
    assert isinstance(proc, forked.ForkedPopen)
    out, err = proc.communicate("input text", timeout=30)
    assert proc.returncode == 3
    seen = json.loads(out)
    assert seen["pid"] == proc.pid and seen["ppid"] != os.getpid()
    assert seen["cwd"] == str(tmp_path) and seen["path0"] == str(tmp_path)
    assert seen["argv"] == [str(probe), "a", "b"] and seen["main"] == "__main__"
    assert seen["env"] == "yes" and seen["extra"] and seen["stdin"] == "input text"
    assert seen["tether"]  # imported before the fork: that is the point
    assert err == "to stderr\n"


@pytest.mark.skipif(forked.EXEC_ONLY, reason="TETHER_TEST_EXEC=1: no fork server")
def test_a_forked_module_runs_as_main_and_dies_by_a_real_sigkill(tmp_path: Path) -> None:
    proc = forked.Popen([sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1"],
                        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert isinstance(proc, forked.ForkedPopen)
    assert proc.stdout is not None
    assert b"Serving HTTP" in proc.stdout.readline()  # unbuffered, as asked
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(0.2)
    assert proc.poll() is None
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    proc.stdout.close()


@pytest.mark.skipif(forked.EXEC_ONLY, reason="TETHER_TEST_EXEC=1: no fork server")
def test_forked_code_runs_as_python_c_would_run_it(tmp_path: Path) -> None:
    code = "import os, sys; print(sys.argv, sys.path[0] == '', __name__, os.getcwd())"
    proc = forked.Popen([sys.executable, "-c", code, "x"], cwd=tmp_path,
                        stdout=subprocess.PIPE, text=True)
    assert isinstance(proc, forked.ForkedPopen)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert out == f"['-c', 'x'] True __main__ {tmp_path}\n"


def test_what_a_fork_cannot_reproduce_gets_a_new_interpreter() -> None:
    """Interpreter settings read at start-up (and other programs) are not forked."""
    env = dict(os.environ, PYTHONWARNINGS="error")
    argv = [sys.executable, "-c", "import sys; print(sys.warnoptions)"]
    proc = forked.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    assert not isinstance(proc, forked.ForkedPopen)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "error" in out
    proc = forked.Popen(["true"])
    assert not isinstance(proc, forked.ForkedPopen) and proc.wait(30) == 0


LINGER = """
import json, os, sys
print(json.dumps({"pid": os.getpid()}), flush=True)
sys.stdin.read()  # until the starter closes our standard input
print("stdin closed", file=sys.stderr, flush=True)
"""


@pytest.mark.skipif(forked.EXEC_ONLY, reason="TETHER_TEST_EXEC=1: no fork server")
@pytest.mark.parametrize("end", ["eof", "sigterm", "sigkill"])
def test_the_launcher_ends_as_its_forked_process_ends(tmp_path: Path, end: str) -> None:
    """What another program starts through ``stdio_command``: the forked process has
    the starter's pipes alone, a SIGTERM to the launcher reaches it, and the launcher
    ends with its status."""
    import json

    script = tmp_path / "linger.py"
    script.write_text(LINGER)
    command, args = forked.stdio_command(script)
    assert args[0] == str(forked.LAUNCHER)
    proc = subprocess.Popen([command, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    child = json.loads(proc.stdout.readline())["pid"]
    assert child != proc.pid
    if end == "eof":
        proc.stdin.close()
        assert proc.wait(30) == 0
        assert proc.stderr.read() == b"stdin closed\n"
    elif end == "sigterm":
        proc.terminate()
        assert proc.wait(30) == -signal.SIGTERM
        proc.stdin.close()
    else:
        os.kill(child, signal.SIGKILL)
        assert proc.stdout.read() == b""  # end-of-file: nobody else holds the pipe
        assert proc.wait(30) == -signal.SIGKILL
        proc.stdin.close()
    proc.stdout.close()
    proc.stderr.close()

"""``Popen`` and ``run`` for the suite's Python processes (``tether worker``, ``tether``
commands, test servers), served by the fork server of ``tests/zygote.py``.

A process asked for as ``[sys.executable, "-m", MODULE, ...]``,
``[sys.executable, "-c", CODE, ...]`` or ``[sys.executable, "FILE.py", ...]`` is forked
from a server that has Tether and its drivers imported already, instead of a new
interpreter importing them again: the same code from the same entry point (``runpy``,
as ``python -m`` does), in a real process with its own PID, descriptors, environment
and working directory, ended by the test with a real signal. What a fork cannot
reproduce (another ``LD_PRELOAD``, interpreter settings such as ``PYTHONWARNINGS``,
``pass_fds``, ``preexec_fn``) falls back to ``subprocess``, and ``TETHER_TEST_EXEC=1``
runs every process with a new interpreter. See docs/testing.md.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXEC_ONLY = os.environ.get("TETHER_TEST_EXEC", "").lower() in ("1", "true", "yes")
#: The fork server's socket, for the processes a test starts (see ``stdio_command``).
SOCKET_ENV = "TETHER_TEST_FORK_SERVER"
LAUNCHER = Path(__file__).with_name("forked_exec.py")

_lock = threading.Lock()
_server: dict[str, Any] = {}


def _socket_path() -> str | None:
    """The fork server's socket, started on first use; None if it cannot start."""
    with _lock:
        if "failed" in _server:
            return None
        if "path" in _server and _server["proc"].poll() is None:
            return str(_server["path"])
        folder = tempfile.mkdtemp(prefix="tether-zygote-")
        path = os.path.join(folder, "s")
        proc = subprocess.Popen([sys.executable, "-m", "tests.zygote", path], cwd=ROOT,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            proc.kill()
            proc.wait()
            _server["failed"] = True
            return None
        _server.update(path=path, proc=proc)
        os.environ[SOCKET_ENV] = path
        atexit.register(_stop, proc, folder)
        return path


def stop_process(proc: subprocess.Popen[Any] | None, grace: float = 30) -> None:
    """End a process the test started, by its PID: SIGTERM, then SIGKILL if it has not
    exited after ``grace`` seconds. Nothing for None or a process that has exited."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)

def _stop(proc: subprocess.Popen[bytes], folder: str) -> None:
    """End the fork server (closing its standard input is its signal to go)."""
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    shutil.rmtree(folder, ignore_errors=True)


def _forkable(args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
    if EXEC_ONLY or not isinstance(args, (list, tuple)) or len(args) < 2:
        return False
    if str(args[0]) != sys.executable:
        return False
    if not ((str(args[1]) in ("-m", "-c") and len(args) > 2)
            or str(args[1]).endswith(".py")):
        return False
    if any(kwargs.get(k) for k in ("preexec_fn", "pass_fds", "shell", "executable",
                                   "user", "group", "extra_groups", "umask")):
        return False
    if kwargs.get("process_group") not in (None, -1):
        return False
    from tests.zygote import INTERPRETER_VARS

    env = kwargs.get("env")
    return env is None or all(env.get(v) == os.environ.get(v) for v in INTERPRETER_VARS)


class ForkedPopen(subprocess.Popen):  # type: ignore[type-arg]
    """A ``subprocess.Popen`` whose child the fork server makes; its exit status
    arrives over the server's connection instead of ``waitpid`` (``_internal_poll``
    and ``_wait`` are the two places ``Popen`` reads a status)."""

    _conn: socket.socket

    def _execute_child(self, args: Any, executable: Any, preexec_fn: Any, close_fds: Any,
                       pass_fds: Any, cwd: Any, env: Any, startupinfo: Any,
                       creationflags: Any, shell: Any, p2cread: int, p2cwrite: int,
                       c2pread: int, c2pwrite: int, errread: int, errwrite: int,
                       restore_signals: Any, gid: Any, gids: Any, uid: Any, umask: Any,
                       start_new_session: bool, process_group: Any) -> None:
        path = _server["path"]
        # The server's socket goes along, for what the child starts (stdio_command).
        request = {"argv": [str(a) for a in args[1:]],
                   "cwd": os.fspath(cwd) if cwd is not None else os.getcwd(),
                   "env": {SOCKET_ENV: path, **(os.environ if env is None else env)},
                   "new_session": bool(start_new_session)}
        fds = [p2cread if p2cread != -1 else 0, c2pwrite if c2pwrite != -1 else 1,
               errwrite if errwrite != -1 else 2]
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            conn.connect(path)
            socket.send_fds(conn, [json.dumps(request).encode()], fds)
            reply = conn.recv(1 << 16)
            if not reply:
                raise OSError("the fork server closed the connection")
            self.pid = json.loads(reply)["pid"]
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._child_created = True
        self._close_pipe_fds(p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite)

    def _status(self, timeout: float | None) -> int | None:
        """The child's raw wait status from the server, or None if it does not come
        within ``timeout`` (0: do not wait)."""
        self._conn.settimeout(timeout)
        try:
            reply = self._conn.recv(1 << 16)
        except (BlockingIOError, TimeoutError):
            return None
        self._conn.close()
        if not reply:  # the server is gone: the status is lost
            return 255 << 8
        return int(json.loads(reply)["status"])

    def _internal_poll(self, _deadstate: Any = None, _waitpid: Any = None,
                       _WNOHANG: Any = None, _ECHILD: Any = None) -> int | None:
        if self.returncode is None and self._waitpid_lock.acquire(False):
            try:
                if self.returncode is None and self._conn.fileno() != -1:
                    status = self._status(0)
                    if status is not None:
                        self._handle_exitstatus(status)
            finally:
                self._waitpid_lock.release()
        return self.returncode

    def _wait(self, timeout: float | None) -> int:
        with self._waitpid_lock:
            if self.returncode is None:
                status = self._status(timeout)
                if status is None:
                    raise subprocess.TimeoutExpired(self.args, timeout or 0)
                self._handle_exitstatus(status)
        assert self.returncode is not None
        return self.returncode


def Popen(args: Sequence[Any], **kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen``, forked from the fork server when it can be."""
    if _forkable(args, kwargs) and _socket_path() is not None:
        return ForkedPopen(args, **kwargs)
    return subprocess.Popen(args, **kwargs)


def run(args: Sequence[Any], *, input: Any = None, timeout: float | None = None,
        check: bool = False, capture_output: bool = False,
        **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run`` over ``Popen`` above."""
    if capture_output:
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    if input is not None:
        kwargs["stdin"] = subprocess.PIPE
    with Popen(args, **kwargs) as proc:
        try:
            stdout, stderr = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        except BaseException:
            proc.kill()
            raise
        code = proc.poll()
        assert code is not None
    if check and code:
        raise subprocess.CalledProcessError(code, args, output=stdout, stderr=stderr)
    return subprocess.CompletedProcess(args, code, stdout, stderr)


def stdio_command(script: Path | str, *args: str, start: bool = True) -> tuple[str, list[str]]:
    """The command and arguments that start ``python SCRIPT ARGS...`` for another
    program (an MCP stdio server that Tether's ``MCPServer.stdio`` starts through the
    ``mcp`` SDK): the launcher ``tests/forked_exec.py``, which has the fork server fork
    the script with the launcher's standard streams. Without a fork server (not started
    and ``start`` false, as in a worker process without ``TETHER_TEST_FORK_SERVER`` in
    its environment, or ``TETHER_TEST_EXEC=1``), the script itself."""
    path = os.environ.get(SOCKET_ENV) if not EXEC_ONLY else None
    if path is None and start and not EXEC_ONLY:
        path = _socket_path()
    if path is None:
        return sys.executable, [str(script), *args]
    return sys.executable, [str(LAUNCHER), path, str(script), *args]

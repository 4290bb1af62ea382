"""The suite's fork server: one per pytest process, started on first use by
``tests/forked.py``.

It imports what a ``tether`` command or a worker imports (Tether, its stores and
drivers, the CLI, the HTTP face) once, then forks a child for every process a test
asks for. The child is a real process like any other (its own PID, connections and
files; killed with SIGKILL, it dies as one), but it starts in a few milliseconds
instead of paying Python's start-up and these imports again: about half a second for
a worker and a third of a second for a ``tether`` command on this machine, for the
~500 processes of a run of the suite.

Protocol, over an ``AF_UNIX`` ``SOCK_SEQPACKET`` socket (one message per packet):

* the client sends a JSON request (``argv`` after the interpreter: ``-m MODULE ...``,
  ``-c CODE ...`` or ``FILE ...``; ``cwd``, ``env``, ``new_session``) with its three
  standard descriptors attached (``SCM_RIGHTS``);
* the server answers ``{"pid": N}`` once the child is forked;
* when the child ends, the server sends ``{"status": S}`` (the raw wait status) and
  closes the connection.

The server stays single-threaded (forking a threaded process is unsafe) and never runs
an event loop. It ends when its standard input closes (its pytest process is gone).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
from typing import Any

#: Imported once here, shared by every child (copy-on-write). Nothing that reads the
#: environment at import time belongs here: a child gets its own environment after the
#: fork (an SDK that reads its settings on import is imported by the child itself).
PRELOAD = (
    "tether",
    "tether.cli",
    "tether.worker",
    "tether.store.sqlite",
    "tether.store.postgres",
    "tether.serve",
    "tether.serve.mcp._face",
    "tether.ai",
    "tether.mcp_tasks",
    "mcp.server.fastmcp",
    "psycopg",
    "psycopg_pool",
    "apsw",
)

#: Interpreter settings read once at start-up: a request whose environment sets them
#: differently from the server's cannot be served by a fork (the client execs instead).
INTERPRETER_VARS = ("PYTHONWARNINGS", "PYTHONDEVMODE", "PYTHONHASHSEED", "PYTHONFAULTHANDLER",
                    "PYTHONASYNCIODEBUG", "PYTHONMALLOC", "PYTHONTRACEMALLOC",
                    "PYTHONIOENCODING", "PYTHONUTF8", "PYTHONOPTIMIZE", "PYTHONSAFEPATH",
                    "PYTHONNOUSERSITE", "PYTHONHOME", "LD_PRELOAD", "LD_LIBRARY_PATH")

#: The server's own PYTHONPATH entries: a child's sys.path has its request's instead.
_SERVER_PYTHONPATH = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]


def _preload() -> None:
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # an optional extra that is not installed: the child imports what it needs


def _child(request: dict[str, Any], fds: list[int]) -> None:
    """In the forked child: become the requested process and never return."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for target, fd in enumerate(fds):  # received descriptors are all above 2
            os.dup2(fd, target)
        os.closerange(3, 4096)  # them, and the server's sockets and pipe
        if request["new_session"]:
            os.setsid()
        code = _run(request)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _run(request: dict[str, Any]) -> int:
    import io
    import runpy
    import threading

    env: dict[str, str] = request["env"]
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(env)
    # The standard streams as a new interpreter makes them over the new descriptors.
    unbuffered = bool(env.get("PYTHONUNBUFFERED"))

    def stream(fd: int, mode: str, line: bool) -> io.TextIOWrapper:
        raw = open(fd, mode + "b", buffering=0, closefd=False)
        buffered: Any = raw
        if not unbuffered or mode == "r":
            buffered = (io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw))
        return io.TextIOWrapper(buffered, encoding="utf-8",
                                errors="strict" if fd == 0 else "backslashreplace",
                                line_buffering=line, write_through=unbuffered)

    sys.stdin = sys.__stdin__ = stream(0, "r", False)
    sys.stdout = sys.__stdout__ = stream(1, "w", os.isatty(1))
    sys.stderr = sys.__stderr__ = stream(2, "w", True)
    # sys.path as `python -m M` or `python FILE` would start it: the directory first,
    # then PYTHONPATH, then the installation's paths.
    argv: list[str] = request["argv"]
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    base = [p for p in sys.path[1:] if p not in _SERVER_PYTHONPATH]
    if argv[0] == "-m":
        first = os.getcwd()
    elif argv[0] == "-c":
        first = ""
    else:
        first = os.path.dirname(os.path.abspath(argv[0]))
    sys.path[:] = [first, *extra, *base]
    try:
        if argv[0] == "-m":
            sys.argv = ["-m", *argv[2:]]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        elif argv[0] == "-c":
            sys.argv = ["-c", *argv[2:]]
            main = type(sys)("__main__")
            sys.modules["__main__"] = main
            exec(compile(argv[1], "<string>", "exec"), main.__dict__)
        else:
            sys.argv = list(argv)
            runpy.run_path(argv[0], run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    # What the interpreter does at exit: wait for non-daemon threads, run atexit.
    threading._shutdown()  # type: ignore[attr-defined]
    import atexit

    atexit._run_exitfuncs()
    return code


def serve(path: str) -> None:
    _preload()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(64)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    children: dict[int, socket.socket] = {}
    stdin = sys.stdin.fileno()
    print("ready", flush=True)
    while True:
        readable, _, _ = select.select([listener, wake_r, stdin], [], [])
        if stdin in readable and not os.read(stdin, 4096):
            return  # the pytest process is gone: its children are the tests' to end
        if wake_r in readable:
            os.read(wake_r, 4096)
        if listener in readable:
            conn, _ = listener.accept()
            try:
                message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
                request = json.loads(message)
            except (OSError, ValueError):
                conn.close()
                continue
            pid = os.fork()
            if pid == 0:
                _child(request, fds)
            for fd in fds:
                os.close(fd)
            try:
                conn.send(json.dumps({"pid": pid}).encode())
            except OSError:
                pass
            children[pid] = conn
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            conn = children.pop(pid, None)
            if conn is not None:
                try:
                    conn.send(json.dumps({"status": status}).encode())
                except OSError:
                    pass
                conn.close()


if __name__ == "__main__":
    serve(sys.argv[1])

"""``python tests/forked_exec.py SOCKET FILE ARGS...``: a launcher for a Python process
that another program starts, such as an MCP stdio server the ``mcp`` SDK starts inside
Tether (see ``tests/forked.py``'s ``stdio_command``).

The launcher asks the fork server at SOCKET (tests/zygote.py) for ``FILE ARGS...`` with
the launcher's own standard streams and environment, lets go of those streams (so the
forked process alone holds the other end of the starter's pipes: when it dies, the
starter reads end-of-file at once), passes on SIGTERM, SIGINT and SIGHUP, and ends as
the forked process ended: with its exit code, or killed by the same signal.

Standard library only: it is a new interpreter, and starting it must cost little.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys


def main() -> None:
    path, *argv = sys.argv[1:]
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    conn.connect(path)
    request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
               "new_session": False}
    socket.send_fds(conn, [json.dumps(request).encode()], [0, 1, 2])
    pid = json.loads(conn.recv(1 << 16))["pid"]
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)

    def forward(signum: int, frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    reply = conn.recv(1 << 16)
    code = os.waitstatus_to_exitcode(json.loads(reply)["status"]) if reply else 255
    if code < 0:
        if -code != signal.SIGKILL:
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


if __name__ == "__main__":
    main()

"""A warm ``medt3d`` for the guide's walk-through: one process imports MONAI once and forks per command.

Every ``medt3d`` command line starts a Python that spends about 10 s of CPU importing torch, MONAI and
what MONAI imports (ignite, MLflow, SciPy...), and the guide runs some 25 of them: that import was most of
the walk-through's time, and the walk-through most of the suite's. Here a server process imports
``medt3d.cli`` and MONAI once; the ``medt3d`` that the guide's blocks find first on their PATH is a small
client that sends its arguments, working folder and environment, with its standard input, output and
error, over a Unix socket. The server forks; the child takes the client's folder, environment and file
descriptors, runs ``medt3d.cli.main`` on the arguments (the console script's function) and sends back its
exit code, which the client exits with. So each command runs the same code on the same arguments, writes
to the same pipes and files and fails the block the same way; only the interpreter's start is shared.
The console script itself is run by tests/test_guide.py's ``test_the_installed_console_script_runs``.

No library does this for a Python command line (nailgun is for the JVM), hence this module.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVER = r"""
import json, os, signal, socket, sys, traceback
import monai  # noqa: F401  (the import that each command would repeat)
from medt3d.cli import build_parser, main
build_parser()  # and every command module
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(sys.argv[1])
listener.listen(8)
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
print("ready", flush=True)
while True:
    conn, _ = listener.accept()
    message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
    if os.fork():
        conn.close()
        for fd in fds:
            os.close(fd)
        continue
    listener.close()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    request = json.loads(message)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["medt3d", *request["args"]]
    try:
        code = main(request["args"])
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    conn.sendall(str(int(code or 0)).encode())
    os._exit(0)
"""

CLIENT = r"""#!{python}
import json, os, socket, sys
conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
conn.connect({socket_path!r})
request = {{"args": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}}
socket.send_fds(conn, [json.dumps(request).encode()], [0, 1, 2])
code = conn.recv(16)
sys.exit(int(code) if code else "medt3d (warm): the command's process died without an exit code")
"""


class WarmMedt3d:
    """Context manager: a server process, and a folder holding the ``medt3d`` client to put first on PATH."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.env = env
        # a short path: a Unix socket's may not exceed 107 bytes, and pytest's tmp_path can be long
        self.socket_path = os.path.join(tempfile.mkdtemp(prefix="medt3d-warm-"), "sock")
        self.server: subprocess.Popen | None = None

    def __enter__(self) -> WarmMedt3d:
        self.folder.mkdir(parents=True, exist_ok=True)
        client = self.folder / "medt3d"
        client.write_text(CLIENT.format(python=sys.executable, socket_path=self.socket_path))
        client.chmod(0o755)
        # its own process group, so that a command still running when the test ends is stopped with it
        self.server = subprocess.Popen([sys.executable, "-c", SERVER, self.socket_path], env=self.env,
                                       stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                       start_new_session=True)
        started = time.monotonic()
        ready = self.server.stdout.readline()
        if ready.strip() != "ready":
            raise RuntimeError(f"the warm medt3d server did not start (exit {self.server.poll()}): {ready!r}")
        self.start_seconds = time.monotonic() - started
        return self

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.server.pid, signal.SIGKILL)
            self.server.wait()
        shutil.rmtree(os.path.dirname(self.socket_path), ignore_errors=True)


def unix_sockets_work() -> bool:
    """Whether this platform has Unix sockets with file-descriptor passing (not Windows)."""
    return hasattr(socket, "AF_UNIX") and hasattr(socket, "send_fds") and hasattr(os, "fork")

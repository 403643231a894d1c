"""Run a real ``tritonserver`` on this machine, on loopback only: for tests, benches and a local try-out.

The server is the one ``nvidia-pytriton`` bundles (Triton 2.51, Python backend only; ``pip install
nvidia-pytriton`` pins ``numpy<2``, so it lives in its own virtual environment:
``scripts/triton_venv.sh`` makes ``build/triton-venv``). :class:`TritonServer` lays out a backends folder
the way pytriton does (the Python backend plus the stub for the venv's Python version), optionally adds
*Python-based backends* (a ``model.py`` under ``backends/<name>/``, which Triton uses for every model
whose config says ``backend: "<name>"``), starts the server with every endpoint bound to 127.0.0.1 on
free ports, waits until it is ready, and stops it by its PID. After the stop it checks that no Python
backend stub of this server outlived it (the stub path is unique to the server's scratch folder).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from parekit.errors import BackendError

__all__ = ["TritonServer", "find_venv", "orphan_stubs"]

HOST = "127.0.0.1"


def find_venv(venv: str | os.PathLike[str] | None = None) -> Path:
    """The virtual environment with ``nvidia-pytriton``: ``venv``, ``$PAREKIT_TRITON_VENV`` or ``build/triton-venv``.

    Raises:
        BackendError: None of them holds pytriton's server.
    """
    candidates = [venv, os.environ.get("PAREKIT_TRITON_VENV"), Path.cwd() / "build" / "triton-venv",
                  Path(__file__).resolve().parents[2] / "build" / "triton-venv"]
    for cand in candidates:
        if cand and _dist(Path(cand)) is not None:
            return Path(cand)
    raise BackendError("no virtual environment with nvidia-pytriton's tritonserver was found",
                       note="make one with: bash scripts/triton_venv.sh (or set PAREKIT_TRITON_VENV)")


def _dist(venv: Path) -> Path | None:
    for lib in sorted(venv.glob("lib/python3*/site-packages/pytriton/tritonserver")):
        if (lib / "bin" / "tritonserver").is_file():
            return lib
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def orphan_stubs(marker: str) -> list[int]:
    """PIDs of live processes whose command line contains ``marker`` (a server's scratch folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (proc / "stat").read_text()
            if marker in cmdline and ") Z " not in stat:
                found.append(int(proc.name))
    return found


class TritonServer:
    """A ``tritonserver`` process serving ``repo`` on 127.0.0.1.

    Args:
        repo: The model repository.
        venv: The pytriton virtual environment (see :func:`find_venv`).
        python_backends: Python-based backends to add: backend name → a ``model.py``.
        log: Where the server's output goes (default: a file in the scratch folder).
        ready_timeout: Seconds to wait for readiness.

    Attributes:
        http_url, grpc_url: ``127.0.0.1:PORT`` of each endpoint once started.
        pid: The server's PID once started.
    """

    def __init__(self, repo: str | os.PathLike[str], *, venv: str | os.PathLike[str] | None = None,
                 python_backends: dict[str, Path] | None = None, log: Path | None = None,
                 ready_timeout: float = 120.0) -> None:
        self.repo = Path(repo).resolve()
        self.venv = find_venv(venv)
        self.python_backends = dict(python_backends or {})
        self.ready_timeout = ready_timeout
        self.scratch = Path(tempfile.mkdtemp(prefix="parekit-triton-"))
        self.log = log or self.scratch / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.http_url = self.grpc_url = ""
        self.pid = 0

    def _backends(self) -> Path:
        dist = _dist(self.venv)
        assert dist is not None
        backends = self.scratch / "backends"
        shutil.copytree(dist / "backends", backends, ignore=shutil.ignore_patterns("__pycache__"))
        python = self._python()
        version = subprocess.run([python, "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.is_file():
            raise BackendError(f"pytriton has no Python backend stub for Python {version} ({stub})")
        shutil.copy(stub, backends / "python" / "triton_python_backend_stub")
        for name, model_py in self.python_backends.items():
            (backends / name).mkdir()
            shutil.copyfile(model_py, backends / name / "model.py")
        return backends

    def _python(self) -> Path:
        return self.venv / "bin" / "python"

    def _env(self) -> dict[str, str]:
        python = self._python()
        info = subprocess.run([python, "-c", "import sysconfig, site; print(sysconfig.get_config_var('LIBDIR')); "
                               "print(site.getsitepackages()[0])"], capture_output=True, text=True, check=True)
        libdir, site = info.stdout.split("\n")[:2]
        dist = _dist(self.venv)
        assert dist is not None
        libs = [str(dist.parent.parent / "nvidia_pytriton.libs"), libdir]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env["LD_LIBRARY_PATH"] = ":".join(libs + ([env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH") else []))
        env["PYTHONPATH"] = site  # the stub embeds the interpreter: make it see the venv (numpy<2, onnxruntime)
        env["PATH"] = f"{self.venv / 'bin'}:{env.get('PATH', '')}"
        return env

    def start(self) -> TritonServer:
        """Start the server and wait until it is ready.

        Raises:
            BackendError: It exits or is not ready in time (the message has the end of its log).
        """
        dist = _dist(self.venv)
        assert dist is not None
        backends = self._backends()
        http, grpc, metrics = _free_port(), _free_port(), _free_port()
        cmd = [str(dist / "bin" / "tritonserver"), f"--model-repository={self.repo}",
               f"--backend-directory={backends}", f"--cache-directory={dist / 'caches'}",
               f"--http-address={HOST}", f"--http-port={http}", f"--grpc-address={HOST}", f"--grpc-port={grpc}",
               f"--metrics-address={HOST}", f"--metrics-port={metrics}", "--allow-gpu-metrics=false",
               "--exit-timeout-secs=10", "--strict-readiness=true"]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self._env(),
                                         start_new_session=True)
        self.pid = self.proc.pid
        self.http_url, self.grpc_url = f"{HOST}:{http}", f"{HOST}:{grpc}"
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BackendError(f"tritonserver exited with status {self.proc.returncode} before it was ready: "
                                   f"{self.log_tail()}")
            with contextlib.suppress(urllib.error.URLError, OSError), \
                    urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as resp:
                if resp.status == 200:
                    return self
            time.sleep(0.2)
        self.stop()
        raise BackendError(f"tritonserver was not ready after {self.ready_timeout:.0f} s: {self.log_tail()}")

    def log_tail(self, lines: int = 12) -> str:
        """The last lines of the server's log, on one line."""
        with contextlib.suppress(OSError):
            text = self.log.read_text(errors="replace").strip().splitlines()[-lines:]
            return " | ".join(t.strip() for t in text)
        return "(no log)"

    def stop(self, timeout: float = 40.0) -> list[int]:
        """Stop the server by its PID (SIGINT, then SIGKILL after ``timeout``) and reap stray stubs.

        Returns:
            The PIDs of backend stubs that were still alive after the server was gone (killed now).
        """
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        orphans = orphan_stubs(str(self.scratch))
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.scratch / "backends", ignore_errors=True)
        return orphans

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

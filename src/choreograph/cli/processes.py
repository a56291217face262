"""``choreograph up --processes``: the Drone Delivery system as separate OS processes over HTTP.

Process layout (all children of this supervisor, each in its own process group, each told to
stop if the supervisor dies):

    gateway    choreograph serve monitor drone_delivery.processes:workflows
               the bus (SQLite, data-dir/bus.db), the gateway (publish, management, metrics,
               webhook delivery and validation) and the transaction monitor, which subscribes
               in process and so runs where the bus runs; on --gateway-port (default --port + 1)
    package    choreograph serve service drone_delivery.processes:package      (data-dir/package.db)
    scheduler  choreograph serve service drone_delivery.processes:scheduler    (…/scheduler.db)
    delivery   choreograph serve service drone_delivery.processes:delivery     (…/delivery.db)
               each a webhook app on loopback (port --port + 2, + 3, + 4 when free, else any)
    ingestion  choreograph serve service drone_delivery.processes:ingestion
               its handlers, the Ingestion API and /transactions, on --port

The supervisor binds every listening socket first (a busy port is a one-line error before
anything starts) and hands each child its socket. It starts the children in stages, each
stage once the previous one answers ``/healthz`` (a service answers 200 once its webhook
subscriptions are registered and validated): the gateway, then the three business services
together, then ingestion, so that the API takes requests only once every subscription exists.
Ctrl-C (or SIGTERM) stops them in the reverse order with SIGINT, each stage within a grace
period (then SIGKILL). A child that dies on its own stops the others, and ``up`` fails with
its name and the end of its log (each child logs to data-dir/logs/<name>.log).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Final

import httpx
import typer

from choreograph.cli.loading import fail
from choreograph.sdk.remote import ADMIN_TOKEN_VARIABLE

__all__ = ["Child", "Supervisor", "bind", "child_command", "drone_delivery_stages", "run_processes"]

HEALTH_TIMEOUT_SECONDS: Final = 60.0
STOP_GRACE_SECONDS: Final = 15.0
POLL_SECONDS: Final = 0.05
LOG_TAIL_LINES: Final = 20
_PR_SET_PDEATHSIG: Final = 1


def child_command(*args: str) -> list[str]:
    """``choreograph ARGS`` as a child process: the console script beside the interpreter when
    there is one, else the interpreter running the CLI's entry point."""
    script = Path(sys.executable).with_name("choreograph")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-c", "from choreograph.cli import main; main()", *args]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to send SIGINT to this child when the supervisor dies (even by SIGKILL)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGINT))


def bind(host: str, port: int, *, fallback: bool = False) -> socket.socket:
    """A listening socket on ``host:port`` (any free port when ``fallback`` and it is busy)."""
    try:
        listening = socket.create_server((host, port))
    except OSError as exc:
        if not fallback:
            raise fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        listening = socket.create_server((host, 0))
    listening.set_inheritable(True)
    return listening


@dataclass
class Child:
    """One process of the system: its command (without the socket), its socket and its log."""

    name: str
    args: list[str]
    listening: socket.socket
    url: str
    """Base URL of its ``/healthz``."""
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def port(self) -> int:
        port: int = self.listening.getsockname()[1]
        return port

    def start(self, environ: Mapping[str, str], *, die_with_parent: bool = True) -> None:
        """Start the child on its socket; ``die_with_parent`` asks Linux to stop it if this
        process dies (it runs code between fork and exec: only for a single-threaded parent)."""
        fd = self.listening.fileno()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                child_command(*self.args, "--fd", str(fd)),
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=dict(environ),
                pass_fds=(fd,),
                process_group=0,
                preexec_fn=_die_with_parent if die_with_parent else None,
            )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-LOG_TAIL_LINES:])


class ChildFailed(Exception):
    """A child exited on its own, or did not become healthy in time."""

    def __init__(self, child: Child, what: str) -> None:
        self.child = child
        super().__init__(f"the {child.name} process {what} (log: {child.log})")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


class Supervisor:
    """Starts ``stages`` of children in order, each stage once the previous one is healthy;
    stops them in reverse order. Use it as a context manager: leaving it stops every child.
    ``die_with_parent=False`` where the supervising process runs threads (a test)."""

    def __init__(
        self,
        stages: Sequence[Sequence[Child]],
        environ: Mapping[str, str],
        *,
        health_timeout_seconds: float = HEALTH_TIMEOUT_SECONDS,
        stop_grace_seconds: float = STOP_GRACE_SECONDS,
        die_with_parent: bool = True,
    ) -> None:
        self.stages = [list(stage) for stage in stages]
        self.environ = dict(environ)
        self.die_with_parent = die_with_parent
        self.health_timeout_seconds = health_timeout_seconds
        self.stop_grace_seconds = stop_grace_seconds

    @property
    def children(self) -> list[Child]:
        return [child for stage in self.stages for child in stage]

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        for stage in self.stages:
            for child in stage:
                child.start(self.environ, die_with_parent=self.die_with_parent)
            for child in stage:
                self._wait_healthy(child)

    def _wait_healthy(self, child: Child) -> None:
        """Poll the child's ``/healthz`` until 200 (waiting on another process is polling)."""
        deadline = time.monotonic() + self.health_timeout_seconds
        with httpx.Client(base_url=child.url, timeout=2.0, trust_env=False) as client:
            while True:
                if not child.running():
                    raise ChildFailed(child, f"exited with status {self._status(child)}")
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/healthz").status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise ChildFailed(
                        child, f"did not answer /healthz within {self.health_timeout_seconds:g} s"
                    )
                time.sleep(POLL_SECONDS)

    @staticmethod
    def _status(child: Child) -> int | None:
        return None if child.process is None else child.process.poll()

    def wait(self) -> None:
        """Block until a child exits (then raise ChildFailed) or the supervisor is interrupted."""
        while True:
            os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)  # any child: do not reap it here
            for child in self.children:
                if child.process is not None and child.process.poll() is not None:
                    raise ChildFailed(child, f"exited with status {child.process.returncode}")

    def stop(self) -> dict[str, int]:
        """SIGINT each stage in reverse order, wait for it within the grace period, then SIGKILL
        what is left; Ctrl-C meanwhile is ignored. The exit status of every child started."""
        previous = {
            signum: signal.signal(signum, signal.SIG_IGN)
            for signum in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            for stage in reversed(self.stages):
                started = [c.process for c in stage if c.process is not None]
                for process in started:
                    if process.poll() is None:
                        with contextlib.suppress(ProcessLookupError):
                            process.send_signal(signal.SIGINT)
                deadline = time.monotonic() + self.stop_grace_seconds
                for process in started:
                    try:
                        process.wait(timeout=max(0.0, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
            return {
                child.name: child.process.returncode
                for child in self.children
                if child.process is not None
            }
        finally:
            for child in self.children:
                child.listening.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """Ctrl-C and SIGTERM stop ``up --processes``, even where it was started with SIGINT ignored
    (a background job of a script); the children, exec'd with these handlers installed, start
    with the default dispositions."""
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, _interrupt) for signum in signals}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def drone_delivery_stages(
    *, host: str, port: int, gateway_port: int, data_dir: Path
) -> list[list[Child]]:
    """The children of ``up --processes`` (see the module docstring), their sockets bound."""
    from drone_delivery.processes import BUSINESS_SERVICES

    logs = data_dir / "logs"
    local = "127.0.0.1"
    module = "drone_delivery.processes"
    stages: list[list[Child]] = []
    sockets: list[socket.socket] = []
    try:
        gateway_socket = bind(host, gateway_port)
        sockets.append(gateway_socket)
        shown = local if host in ("", "0.0.0.0", "::") else host
        gateway_url = f"http://{shown}:{gateway_port}"
        gateway = Child(
            "gateway",
            [
                *("serve", "monitor", f"{module}:workflows"),
                *("--bus", f"sqlite:///{data_dir / 'bus.db'}", "--data-dir", str(data_dir)),
                *("--public-url", gateway_url, "--webhook-allow-private"),
            ],
            gateway_socket,
            gateway_url,
            logs / "gateway.log",
        )
        stages.append([gateway])
        business = []
        for offset, name in enumerate(BUSINESS_SERVICES, start=2):
            wanted = port + offset if port + offset < 65536 else 0
            listening = bind(local, wanted, fallback=True)
            sockets.append(listening)
            url = f"http://{local}:{listening.getsockname()[1]}"
            business.append(
                Child(
                    name,
                    _service_args(module, name, gateway_url, url, data_dir),
                    listening,
                    url,
                    logs / f"{name}.log",
                )
            )
        stages.append(business)
        api_socket = bind(host, port)
        sockets.append(api_socket)
        api_url = f"http://{shown}:{port}"
        ingestion = Child(
            "ingestion",
            _service_args(module, "ingestion", gateway_url, api_url, data_dir),
            api_socket,
            api_url,
            logs / "ingestion.log",
        )
        stages.append([ingestion])
    except BaseException:
        for listening in sockets:
            listening.close()
        raise
    return stages


def _service_args(module: str, name: str, gateway: str, public: str, data_dir: Path) -> list[str]:
    return [
        *("serve", "service", f"{module}:{name}"),
        *("--gateway", gateway, "--public-url", public, "--data-dir", str(data_dir)),
    ]


def run_processes(
    *,
    host: str,
    port: int,
    gateway_port: int,
    data_dir: Path,
    admin_token: str | None,
    banner: str,
) -> None:
    """Run the system as processes until Ctrl-C; ``banner`` is printed once every child is
    healthy (``{processes}`` in it is replaced by the process list)."""
    stages = drone_delivery_stages(
        host=host, port=port, gateway_port=gateway_port, data_dir=data_dir
    )
    environ = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if admin_token is not None:
        environ[ADMIN_TOKEN_VARIABLE] = admin_token
    supervisor = Supervisor(stages, environ)
    with _signals_interrupt():
        try:
            with supervisor:
                supervisor.start()
                processes = ", ".join(
                    f"{child.name} :{child.port} (pid {child.process.pid if child.process else '?'})"
                    for child in supervisor.children
                )
                typer.echo(banner.replace("{processes}", processes))
                supervisor.wait()
        except ChildFailed as failed:
            tail = failed.child.tail()
            if tail:
                typer.echo(tail, err=True)
            raise fail(str(failed), code=1) from None
        except KeyboardInterrupt:
            pass
    typer.echo("Stopped.")

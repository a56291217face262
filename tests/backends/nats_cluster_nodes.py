"""A private three-node NATS JetStream cluster for the fault-tolerance tests.

Each node is the installed ``nats-server`` binary with a configuration file of its own (server
name, client, cluster and monitoring ports on loopback, a JetStream store directory) written
under the test's temporary directory; the ports are free ones the OS picked. Nodes are killed
and stopped by PID, never by name, so the shared server on 127.0.0.1:4222 is never touched.

Waiting on the servers is the one place where these tests poll, always with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
CLUSTER_NAME = "choreograph-test"
NODE_NAMES = ("n1", "n2", "n3")
READY_SECONDS = 30.0
POLL_SECONDS = 0.1
STOP_SECONDS = 10.0


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports nobody listens on (all held open while choosing)."""
    with contextlib.ExitStack() as stack:
        probes = []
        for _ in range(count):
            probe = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            probe.bind(("127.0.0.1", 0))
            probes.append(probe)
        return [probe.getsockname()[1] for probe in probes]


def require_nats_server() -> None:
    """Skip the test without the ``nats-server`` binary, or fail it where services are
    required (CI)."""
    if Path(NATS_SERVER).is_file() and os.access(NATS_SERVER, os.X_OK):
        return
    reason = f"no nats-server binary at {NATS_SERVER}"
    if os.environ.get("CHOREOGRAPH_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason}; CHOREOGRAPH_REQUIRE_SERVICES=1 requires it", pytrace=False)
    pytest.skip(reason)


@dataclass
class Node:
    """One ``nats-server`` of the cluster: its ports, files and process."""

    name: str
    client_port: int
    cluster_port: int
    monitor_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    killed: bool = False
    """Stopped on purpose (so its exit is no failure)."""

    @property
    def config(self) -> Path:
        return self.directory / f"{self.name}.conf"

    @property
    def store_dir(self) -> Path:
        return self.directory / self.name

    @property
    def log(self) -> Path:
        return self.directory / f"{self.name}.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def write_config(self, routes: list[int]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        route_list = ", ".join(f"nats-route://127.0.0.1:{port}" for port in routes)
        self.config.write_text(
            f"server_name: {self.name}\n"
            f"listen: 127.0.0.1:{self.client_port}\n"
            f"http: 127.0.0.1:{self.monitor_port}\n"
            "max_payload: 2MB\n"  # the largest event (1 MB) and its headers
            f'jetstream {{ store_dir: "{self.store_dir}" }}\n'
            "cluster {\n"
            f"  name: {CLUSTER_NAME}\n"
            f"  listen: 127.0.0.1:{self.cluster_port}\n"
            f"  routes: [{route_list}]\n"
            "}\n"
        )

    def start(self) -> None:
        """Start the server (again: same configuration, same store directory)."""
        assert not self.running, f"{self.name} already runs"
        self.starts += 1
        self.killed = False
        with self.log.open("ab") as output:
            output.write(f"--- start {self.starts} ---\n".encode())
            output.flush()
            self.process = subprocess.Popen(
                [NATS_SERVER, "-c", str(self.config)], stdout=output, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        """SIGKILL the server by PID and reap it."""
        if self.process is None:
            return
        self.killed = True
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=STOP_SECONDS)

    def stop(self) -> None:
        """Stop the server by PID: SIGTERM, then SIGKILL if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Cluster:
    """Three nodes routed to each other; see the module docstring."""

    nodes: list[Node]
    http: httpx.AsyncClient

    def url(self, namespace: str, *, replicas: int = 3) -> str:
        """The bus URL naming every node, with R``replicas`` streams under ``namespace``."""
        servers = ",".join(node.address for node in self.nodes)
        return f"nats://{servers}?replicas={replicas}&namespace={namespace}"

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    async def jsz(self, node: Node, **params: str) -> dict[str, Any] | None:
        """The node's ``/jsz`` monitoring document, or None while it does not answer."""
        try:
            reply = await self.http.get(f"http://127.0.0.1:{node.monitor_port}/jsz", params=params)
        except httpx.TransportError:
            return None
        if reply.status_code != 200:
            return None
        document: dict[str, Any] = reply.json()
        return document

    async def meta_leader(self) -> str | None:
        """The JetStream meta leader every running node agrees on, with all three nodes in the
        meta group; None while there is none."""
        leaders = set()
        for node in self.nodes:
            if not node.running:
                continue
            document = await self.jsz(node)
            meta = (document or {}).get("meta_cluster") or {}
            if not meta.get("leader") or meta.get("cluster_size") != len(self.nodes):
                return None
            leaders.add(meta["leader"])
        return leaders.pop() if len(leaders) == 1 else None

    async def wait_for_meta_leader(self, seconds: float = READY_SECONDS) -> str:
        """Wait until the running nodes agree on a meta leader; fail naming the logs if not."""
        deadline = time.monotonic() + seconds
        while True:
            self.check_alive()
            leader = await self.meta_leader()
            if leader is not None:
                return leader
            if time.monotonic() > deadline:
                logs = "\n".join(f"== {node.name}\n{node.tail()}" for node in self.nodes)
                pytest.fail(f"no JetStream meta leader within {seconds} s:\n{logs}")
            await asyncio.sleep(POLL_SECONDS)

    def check_alive(self) -> None:
        """Fail the test when a node exited that nobody killed."""
        for node in self.nodes:
            if node.process is not None and not node.killed and node.process.poll() is not None:
                pytest.fail(f"{node.name} exited with {node.process.returncode}:\n{node.tail()}")

    def stop(self) -> None:
        for node in self.nodes:
            node.killed = True
            node.stop()


@contextlib.asynccontextmanager
async def running_cluster(directory: Path) -> AsyncIterator[Cluster]:
    """Write the three nodes' configurations under ``directory``, start them, wait for a
    JetStream meta leader, and stop every node (by PID) on the way out."""
    require_nats_server()
    ports = free_ports(3 * len(NODE_NAMES))
    nodes = [
        Node(name, *ports[3 * index : 3 * index + 3], directory=directory)
        for index, name in enumerate(NODE_NAMES)
    ]
    routes = [node.cluster_port for node in nodes]
    async with httpx.AsyncClient(timeout=2.0) as http:
        cluster = Cluster(nodes, http)
        try:
            for node in nodes:
                node.write_config(routes)
                node.start()
            await cluster.wait_for_meta_leader()
            yield cluster
        finally:
            cluster.stop()

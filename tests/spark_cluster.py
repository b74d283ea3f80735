"""A Spark standalone cluster on loopback for tests: one master and two workers, each its
own JVM with its own small heap, started from the pyspark distribution's ``bin/spark-class``.

The driver (the test process) gets ``spark.driver.maxResultSize`` small and broadcasts
capped, so a ``collect()``/``toArrow()`` of data rows, or a broadcast of a large table,
fails the test instead of passing unseen in one shared ``local[*]`` heap. Every JVM is
started in its own process group and killed with it (executors are children of their
worker), whatever the test did.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

#: Small on purpose: a collect of the tests' data (tens of MB) cannot fit.
DRIVER_MAX_RESULT = "8m"
BROADCAST_LIMIT = str(1024 * 1024)
WORKER_MEMORY = "640m"  # what a worker offers its executor
EXECUTOR_MEMORY = "512m"
DAEMON_HEAP = "256m"  # the master's and each worker's own JVM
START_TIMEOUT = 120.0


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Cluster:
    """A running cluster: its master URL and the processes to end."""

    workdir: Path
    master_url: str = ""
    ui_port: int = 0
    processes: list[subprocess.Popen] = field(default_factory=list)

    def start(self, workers: int = 2) -> Cluster:
        env = {
            **os.environ,
            "SPARK_HOME": str(spark_home()),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_MASTER_HOST": "127.0.0.1",
            "SPARK_DAEMON_MEMORY": DAEMON_HEAP,
            "SPARK_LOG_DIR": str(self.workdir / "logs"),
            "SPARK_NO_DAEMONIZE": "1",
            "PYSPARK_PYTHON": sys.executable,
        }
        spark_class = str(spark_home() / "bin" / "spark-class")
        port, self.ui_port = free_port(), free_port()
        self.master_url = f"spark://127.0.0.1:{port}"
        self._spawn("master", [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(self.ui_port)], env)
        self._wait(lambda: self._status() is not None, "the master to listen")
        for i in range(workers):
            work = self.workdir / f"worker-{i}"
            work.mkdir(parents=True, exist_ok=True)
            self._spawn(
                f"worker-{i}",
                [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--port", str(free_port()), "--webui-port", str(free_port()),
                 "--cores", "1", "--memory", WORKER_MEMORY, "--work-dir", str(work), self.master_url],
                env,
            )
        self._wait(lambda: len(self.alive_workers()) == workers, f"{workers} workers to register")
        return self

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> None:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - kept open for the JVM's life
        # Its own process group: the JVM and everything it starts (executors) end together.
        self.processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=self.workdir, start_new_session=True))

    def _status(self) -> dict | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=2) as response:
                return json.loads(response.read())
        except OSError:
            return None

    def alive_workers(self) -> list[dict]:
        status = self._status() or {}
        return [w for w in status.get("workers", []) if w.get("state") == "ALIVE"]

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if ready():
                return
            dead = [p.args[1] for p in self.processes if p.poll() is not None]
            if dead:
                raise RuntimeError(f"a cluster JVM exited while waiting for {what}: {dead}; logs in {self.workdir}")
            time.sleep(0.5)
        raise TimeoutError(f"timed out after {START_TIMEOUT:.0f}s waiting for {what}; logs in {self.workdir}")

    def stop(self) -> None:
        """End every JVM of the cluster (and the executors in their groups): TERM, then KILL."""
        for process in reversed(self.processes):
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.processes:
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        self.processes.clear()


def driver_conf() -> dict[str, str]:
    """The driver's settings on the cluster: loopback, small results and broadcasts."""
    return {
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.memory": "1g",
        "spark.driver.maxResultSize": DRIVER_MAX_RESULT,
        "spark.sql.autoBroadcastJoinThreshold": BROADCAST_LIMIT,
        "spark.executor.memory": EXECUTOR_MEMORY,
        "spark.executor.cores": "1",
        "spark.cores.max": "2",
        "spark.sql.shuffle.partitions": "4",
        "spark.default.parallelism": "4",
        "spark.executorEnv.PYSPARK_PYTHON": sys.executable,
    }

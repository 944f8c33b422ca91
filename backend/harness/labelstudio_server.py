"""Run a real Label Studio 1.23.2 locally: install it into its own venv, start, wait, stop.

Used by the end-to-end tests, the demo script and anyone who wants a throwaway Label Studio
next to the prelabel ML backend.

    from prelabel.harness.labelstudio_server import LabelStudioServer, free_port

    with LabelStudioServer(Path("/tmp/ls-data"), port=free_port()) as ls:
        client = label_studio_sdk.LabelStudio(base_url=ls.url, api_key=ls.token)

Label Studio lives in its own virtual environment because it pins openai 1.x (prelabel needs a
newer one). The first install takes about 2 minutes and 1 GB; the first start runs the database
migrations (about 50 s), later starts take about 10 s.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

import requests

from prelabel.settings import Settings

__all__ = [
    "LS_VERSION",
    "LabelStudioInstallError",
    "LabelStudioServer",
    "LabelStudioServerError",
    "LabelStudioStartError",
    "PortInUseError",
    "default_venv",
    "ensure_label_studio",
    "free_port",
    "installed_version",
]

logger = logging.getLogger("prelabel.labelstudio")

LS_VERSION = "1.23.2"
DEFAULT_USERNAME = "admin@prelabel.local"
CREDENTIALS_FILE = "prelabel-credentials.json"
SECRET_KEY_FILE = "prelabel-secret-key"
LOG_FILE = "label-studio.log"

# What Label Studio needs to work with a backend on a private address, offline; docker-compose.yml is
# checked against it by the tests.
BACKEND_FRIENDLY_ENV = {
    # Without it on the first start, `Token <key>` gets 401.
    "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
    # Without these two a 127.0.0.1 ML backend can't be added / gets no webhook.
    "SSRF_PROTECTION_ENABLED": "false",
    "ML_BLOCK_LOCAL_IP": "false",
    # Offline and quiet: no calls home.
    "LATEST_VERSION_CHECK": "false",
    "COLLECT_ANALYTICS": "false",
}


class LabelStudioServerError(RuntimeError):
    """Base class for everything that can go wrong while installing or running a Label Studio server (the
    client's errors are prelabel.labelstudio.LabelStudioError)."""


class LabelStudioInstallError(LabelStudioServerError):
    pass


class LabelStudioStartError(LabelStudioServerError):
    pass


class PortInUseError(LabelStudioStartError):
    pass


# --------------------------------------------------------------------------- install


def _say(message: str) -> None:
    """Progress for a human: through logging (the CLI renders it on its console), or on stderr if nobody
    configured logging.

    Why: a 2-minute silent install looks like a hang, and library code must not assume the
    caller set up logging handlers.
    """
    logger.info(message)
    if not logging.getLogger().hasHandlers() and not logger.hasHandlers():
        print(f"label-studio: {message}", file=sys.stderr, flush=True)


def default_venv() -> Path:
    """The PRELABEL_LS_VENV setting, by default .venv-labelstudio in the working folder (the Makefile sets it to
    the checkout's)."""
    return Settings().prelabel_ls_venv.expanduser().resolve()


def _bin_dir(venv: Path) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin")


def _venv_python(venv: Path) -> Path:
    return _bin_dir(venv) / ("python.exe" if os.name == "nt" else "python")


def _ls_executable(venv: Path) -> Path:
    return _bin_dir(venv) / ("label-studio.exe" if os.name == "nt" else "label-studio")


def installed_version(venv: Path | None = None) -> str | None:
    """The label-studio version installed in `venv`, or None.

    Why not `label-studio --version`: in 1.23.2 the bare flag prints the version and then
    *starts the server* (and `label-studio version` first migrates a database in
    ~/.local/share/label-studio). Reading the package metadata is instant and side-effect free.
    """
    venv = venv or default_venv()
    python = _venv_python(venv)
    if not python.exists() or not _ls_executable(venv).exists():
        return None
    proc = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('label-studio'))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


@contextmanager
def _install_lock(venv: Path) -> Iterator[None]:
    """Serialise concurrent installs (parallel test workers, two terminals) into one venv."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    lock_path = venv.parent / f".{venv.name}.install.lock"
    with open(lock_path, "w") as fh:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; concurrent installs are unlikely there
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run_logged(cmd: list[str], what: str) -> None:
    """Run a command, stream the interesting lines as progress, raise with the tail on failure."""
    tail: deque[str] = deque(maxlen=40)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.rstrip()
        tail.append(line)
        # Why filter: pip prints ~500 lines; these few show that it is moving and where.
        if line.startswith(("Collecting ", "Installing collected", "Successfully installed", "ERROR")):
            _say(line if len(line) <= 160 else line[:157] + "...")
        else:
            logger.debug(line)
    rc = proc.wait()
    if rc != 0:
        raise LabelStudioInstallError(
            f"{what} failed (exit {rc}): {' '.join(cmd)}\n--- last output ---\n" + "\n".join(tail)
        )


def ensure_label_studio(venv: Path | None = None) -> Path:
    """Make sure label-studio==1.23.2 is installed in its own venv; return its executable.

    Creates the venv with the current interpreter (`python -m venv`) if needed and pip-installs
    label-studio into it. Idempotent and cheap when already installed.
    """
    venv = Path(venv).expanduser().resolve() if venv else default_venv()
    exe = _ls_executable(venv)
    if installed_version(venv) == LS_VERSION:
        return exe

    with _install_lock(venv):
        # Another process may have finished the install while we waited for the lock.
        found = installed_version(venv)
        if found == LS_VERSION:
            return exe
        _say(
            f"Installing Label Studio {LS_VERSION} into {venv} "
            f"(found: {found or 'nothing'}). The first time this takes about 2 minutes and 1 GB; "
            "it is kept in its own venv because Label Studio pins openai 1.x."
        )
        started = time.monotonic()
        if not _venv_python(venv).exists():
            _say(f"Creating virtual environment {venv}")
            _run_logged([sys.executable, "-m", "venv", str(venv)], "creating the venv")
        _run_logged(
            [
                str(_venv_python(venv)),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--progress-bar",
                "off",
                f"label-studio=={LS_VERSION}",
            ],
            f"pip install label-studio=={LS_VERSION}",
        )
        found = installed_version(venv)
        if found != LS_VERSION:
            raise LabelStudioInstallError(
                f"after pip install, {venv} reports label-studio {found!r}, expected {LS_VERSION}"
            )
        _say(f"Label Studio {LS_VERSION} installed in {time.monotonic() - started:.0f} s")
    return exe


# --------------------------------------------------------------------------- ports


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_in_use(host: str, port: int) -> bool:
    # Someone listening on it?
    for target in {host, "127.0.0.1"}:
        try:
            with socket.create_connection((target, port), timeout=0.5):
                return True
        except OSError:
            pass
    # Can we bind it? SO_REUSEADDR like Django's server, so TIME_WAIT leftovers don't count.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


# --------------------------------------------------------------------------- server


@dataclass
class _Credentials:
    """What the data dir was initialised with. Label Studio only applies username/password/token
    when it *creates* the user, so a restart must reuse them: we keep them next to the database."""

    username: str
    password: str
    token: str

    @classmethod
    def load(cls, path: Path) -> _Credentials | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))
        path.chmod(0o600)


@dataclass(eq=False)  # identity semantics: two servers on one dir are still two processes
class LabelStudioServer:
    """A headless Label Studio on `host:port` with SQLite and media in `data_dir`.

    password/token default to the values stored in `data_dir` (random on first use), so
    restarting on the same data dir keeps working logins, sessions and API tokens.
    `token` is a legacy API token: send it as `Authorization: Token <token>` or pass it as
    `api_key` to label_studio_sdk.LabelStudio.
    """

    data_dir: Path
    port: int = 8080
    host: str = "127.0.0.1"
    username: str = DEFAULT_USERNAME
    password: str | None = None
    token: str | None = None
    venv: Path | None = None
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _log_fh: IO[str] | None = field(default=None, init=False, repr=False)
    _log_offset: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser().resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        creds_path = self.data_dir / CREDENTIALS_FILE
        stored = _Credentials.load(creds_path)
        db_exists = (self.data_dir / "label_studio.sqlite3").exists()
        if stored is not None and db_exists:
            # The user already exists in the database; LS would silently ignore new values.
            for name in ("username", "password", "token"):
                given = getattr(self, name)
                if name == "username" and given == DEFAULT_USERNAME:
                    given = None
                if given is not None and given != getattr(stored, name):
                    raise LabelStudioServerError(
                        f"{self.data_dir} was initialised with a different {name}; Label Studio "
                        "only sets credentials when it creates the user. Omit it, or use a new data dir."
                    )
            self.username, self.password, self.token = stored.username, stored.password, stored.token
        else:
            self.password = self.password or secrets.token_urlsafe(12)
            # LS ignores tokens of 5 chars or fewer; its Token.key column holds 40.
            self.token = self.token or secrets.token_hex(20)
            if len(self.token) <= 5 or len(self.token) > 40:
                raise ValueError("token must be 6..40 characters (Label Studio's legacy token key)")
            _Credentials(self.username, self.password, self.token).save(creds_path)

    # ---- properties

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    # ---- internals

    def _secret_key(self) -> str:
        # Persisted so a restart keeps browser sessions and signed URLs valid.
        path = self.data_dir / SECRET_KEY_FILE
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        key = secrets.token_urlsafe(50)
        path.write_text(key)
        path.chmod(0o600)
        return key

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        # Drop inherited settings that would point LS at another database, host or port
        # (LS reads NAME, LABEL_STUDIO_NAME and HEARTEX_NAME alike).
        for name in (
            "DJANGO_DB",
            "DATABASE_NAME",
            "HOST",
            "PORT",
            "BASE_DATA_DIR",
            "USERNAME",
            "PASSWORD",
            "USER_TOKEN",
        ):
            for prefix in ("", "LABEL_STUDIO_", "HEARTEX_"):
                env.pop(prefix + name, None)
        env.pop("DJANGO_SETTINGS_MODULE", None)
        env.update(
            {
                "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
                "LABEL_STUDIO_USERNAME": self.username,
                "LABEL_STUDIO_PASSWORD": str(self.password),
                "LABEL_STUDIO_USER_TOKEN": str(self.token),
                **BACKEND_FRIENDLY_ENV,
                "SENTRY_DSN": "",
                "FRONTEND_SENTRY_DSN": "",
                "SECRET_KEY": self._secret_key(),
                "PYTHONUNBUFFERED": "1",  # so the log tail in errors is current
            }
        )
        return env

    def log_tail(self, lines: int = 60) -> str:
        """The last lines Label Studio wrote during this start."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self._log_offset)
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _fail(self, message: str) -> LabelStudioStartError:
        tail = self.log_tail()
        self.stop()
        return LabelStudioStartError(f"{message}\nlog: {self.log_path}\n--- last lines ---\n{tail}")

    # ---- lifecycle

    def start(self, timeout: float = 180) -> LabelStudioServer:
        """Install if needed, start, and block until /health answers and the token works."""
        if self.running:
            return self
        exe = ensure_label_studio(self.venv)
        if _port_in_use(self.host, self.port):
            # LS itself would silently move to the next free port; we would then poll the wrong one.
            raise PortInUseError(
                f"port {self.port} on {self.host} is already in use: stop whatever listens there "
                f"(e.g. `lsof -i :{self.port}`) or pick another port (free_port())"
            )

        self._log_fh = open(self.log_path, "a", encoding="utf-8")
        self._log_offset = self._log_fh.tell()
        self._log_fh.write(f"\n===== prelabel: starting Label Studio on {self.url} at {time.ctime()} =====\n")
        self._log_fh.flush()
        cmd = [str(exe), "start", "--no-browser", "--internal-host", self.host, "--port", str(self.port)]
        first = not (self.data_dir / "label_studio.sqlite3").exists()
        _say(
            f"Starting Label Studio on {self.url} (data: {self.data_dir}, log: {self.log_path}); "
            + ("first start runs migrations, about 1 minute" if first else "about 10 s")
        )
        self._proc = subprocess.Popen(
            cmd,
            cwd=self.data_dir,
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            # Own process group: stop() can take down LS and anything it spawned, and a Ctrl-C
            # in the parent's terminal doesn't kill it mid-migration.
            start_new_session=True,
        )
        atexit.register(self.stop)  # never leave an orphan server behind a crashed test run

        deadline = time.monotonic() + timeout
        started = time.monotonic()
        while True:
            if self._proc.poll() is not None:
                raise self._fail(f"Label Studio exited with code {self._proc.returncode} before it was ready")
            if f"Port {self.port} is in use" in self.log_tail(200):
                raise self._fail(f"Label Studio found port {self.port} busy and moved elsewhere")
            try:
                r = requests.get(f"{self.url}/health", timeout=2)
                if r.ok and r.json().get("status") == "UP":
                    break
            except (requests.RequestException, ValueError):
                pass
            if time.monotonic() > deadline:
                raise self._fail(f"Label Studio did not answer {self.url}/health within {timeout:.0f} s")
            time.sleep(0.5)

        # Health is up; make sure the API token is accepted, or every later call fails obscurely.
        r = requests.get(
            f"{self.url}/api/current-user/whoami", headers={"Authorization": f"Token {self.token}"}, timeout=10
        )
        if r.status_code != 200:
            raise self._fail(
                f"Label Studio is up but rejects the API token (HTTP {r.status_code}); the data dir "
                "was probably initialised without legacy tokens or with another token"
            )
        _say(f"Label Studio is ready on {self.url} after {time.monotonic() - started:.0f} s")
        return self

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM the process group, SIGKILL it if it lingers. Safe to call twice."""
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if proc is not None and proc.poll() is None:
            self._signal(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                logger.warning("Label Studio (pid %s) ignored SIGTERM; killing it", proc.pid)
                self._signal(proc, signal.SIGKILL)
                proc.wait(timeout=10)
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    @staticmethod
    def _signal(proc: subprocess.Popen, sig: int) -> None:
        try:
            if hasattr(os, "killpg"):
                os.killpg(proc.pid, sig)  # pgid == pid thanks to start_new_session
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            pass

    def __enter__(self) -> LabelStudioServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":  # manual use: python -m prelabel.harness.labelstudio_server [data_dir] [port]
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # SIGTERM (kill, docker stop) must unwind through __exit__, or LS outlives us in its own session.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".prelabel") / "labelstudio"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 8080
    with LabelStudioServer(data, port=port) as server:
        print(f"Label Studio: {server.url}  user: {server.username}  password: {server.password}")
        print(f"API token: {server.token}  (Ctrl-C to stop)")
        try:
            while server.running:
                time.sleep(1)
        except KeyboardInterrupt:
            pass

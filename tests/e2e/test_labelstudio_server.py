"""The Label Studio harness against a real Label Studio 1.23.2.

No skips: if Label Studio cannot be installed or started, these tests fail with the reason.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import requests
from label_studio_sdk import LabelStudio

from prelabel.harness.labelstudio_server import (
    LS_VERSION,
    LabelStudioServer,
    PortInUseError,
    ensure_label_studio,
    free_port,
    installed_version,
)

pytestmark = pytest.mark.e2e

CONFIG = """<View>
  <Text name="dialogue" value="$dialogue"/>
  <TextArea name="summary" toName="dialogue" maxSubmissions="1" editable="true"/>
</View>"""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_ensure_label_studio_installs_the_pinned_version() -> None:
    exe = ensure_label_studio()
    assert exe.exists()
    assert installed_version() == LS_VERSION


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = LabelStudioServer(tmp_path / "ls", port=port)
        with pytest.raises(PortInUseError, match=f"port {port}"):
            server.start()
        assert not server.running


def test_start_use_stop_and_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "ls"
    port = free_port()

    with LabelStudioServer(data_dir, port=port) as server:
        assert server.url == f"http://127.0.0.1:{port}"
        assert requests.get(f"{server.url}/health", timeout=5).json()["status"] == "UP"

        ls = LabelStudio(base_url=server.url, api_key=server.token)
        assert list(ls.projects.list()) == []
        project = ls.projects.create(title="harness check", label_config=CONFIG)
        assert [p.id for p in ls.projects.list()] == [project.id]
        assert ls.users.whoami().email == server.username

        # The known password logs in through the web form too (reviewers use it).
        session = requests.Session()
        login = f"{server.url}/user/login/"
        session.get(login, timeout=10)
        r = session.post(
            login,
            data={
                "email": server.username,
                "password": server.password,
                "csrfmiddlewaretoken": session.cookies["csrftoken"],
            },
            headers={"Referer": login},
            timeout=10,
        )
        assert r.ok and "/user/login" not in r.url
        pid = server.pid

    assert pid is not None and not _pid_alive(pid)
    assert not server.running
    assert server.log_path.exists() and server.log_path.stat().st_size > 0
    with socket.socket() as s:  # the port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))

    # Same data dir: same credentials (read back from the dir), same projects.
    with LabelStudioServer(data_dir, port=port) as again:
        assert (again.username, again.password, again.token) == (server.username, server.password, server.token)
        ls = LabelStudio(base_url=again.url, api_key=again.token)
        assert [p.title for p in ls.projects.list()] == ["harness check"]

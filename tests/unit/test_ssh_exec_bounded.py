"""A run over SSH ends within its limits even when the server never answers the exec
request: paramiko waits for that reply without a timeout, and a link cut between
opening the channel and the reply (the transport still looks alive) used to hang an
apply for good (seen once in CI: tests/integration/test_faults.py, link cut mid-apply).

The real transport cannot be made to lose exactly that packet on demand, so the
channel here is paramiko's own Channel class on a transport that never answers."""

from __future__ import annotations

import time

import paramiko
import pytest

from provisioner.connection.options import SshOptions
from provisioner.connection.ssh import SshConnection
from provisioner.errors import Unreachable


class SilentTransport:
    """Accepts every message, answers none; stays "active" like a cut TCP link."""

    active = True

    def is_active(self) -> bool:
        return True

    def open_session(self, timeout: float | None = None) -> paramiko.Channel:
        chan = paramiko.Channel(1)
        chan._set_transport(self)
        chan.active = True
        chan.remote_chanid = 7
        chan.out_window_size = chan.out_max_packet_size = 32768
        return chan

    def _send_user_message(self, m: paramiko.Message) -> None:
        pass

    def get_exception(self) -> None:
        return None

    def get_log_channel(self) -> str:
        return "paramiko.transport"

    def _unlink_channel(self, chanid: int) -> None:
        pass


@pytest.mark.parametrize("timeout", [0.5, None])
def test_an_unanswered_exec_request_ends_in_a_clear_error(timeout):
    conn = SshConnection("h1", "192.0.2.1", options=SshOptions(connect_timeout=0.8))
    conn._transport = SilentTransport()
    t0 = time.monotonic()
    with pytest.raises(Unreachable) as err:
        conn.run(["true"], timeout=timeout)
    elapsed = time.monotonic() - t0
    assert elapsed < 3, elapsed  # min(timeout, connect_timeout), not forever
    assert "connection lost while running true" in str(err.value)

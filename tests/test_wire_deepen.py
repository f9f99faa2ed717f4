"""A protocol-v0 deepen over a stateful connection (SSH, git://): git's upload-pack answers the
deepen (shallow/unshallow lines and a flush) before any ACK, while the client is still sending
its haves. dulwich polls for ACKs between haves and, finding the answer already there, took
its flush for an ACK: a bare AssertionError (issue 19). Replayed here byte for byte, the
answer already waiting, so the outcome does not depend on timing."""

from __future__ import annotations

import io
from typing import Any

from dulwich.client import TCPGitClient
from dulwich.objects import ObjectID
from dulwich.protocol import Protocol, pkt_line

from gitsync.git import wire

WANT = ObjectID(b"a" * 40)
HAVES = [ObjectID(f"{i:040x}".encode()) for i in range(1, 6)]


def _server_answer() -> bytes:
    refs = (pkt_line(WANT + b" HEAD\x00multi_ack_detailed shallow thin-pack ofs-delta\n")
            + pkt_line(WANT + b" refs/heads/main\n") + b"0000")
    deepen = pkt_line(b"shallow " + b"c" * 40 + b"\n") + pkt_line(
        b"unshallow " + HAVES[0] + b"\n") + b"0000"
    acks = pkt_line(b"ACK " + HAVES[0] + b" common\n") + pkt_line(b"ACK " + HAVES[0] + b"\n")
    return refs + deepen + acks + b"PACK-BYTES"


class _Walker:
    def __init__(self) -> None:
        self.shallow = {HAVES[0]}
        self.todo = list(HAVES)

    def __next__(self) -> ObjectID | None:
        return self.todo.pop(0) if self.todo else None

    def ack(self, sha: ObjectID) -> None:
        pass

    def nak(self) -> None:
        pass


def test_a_v0_deepen_answer_waiting_before_the_haves_is_read_after_done() -> None:
    client = TCPGitClient("127.0.0.1")
    answer = io.BytesIO(_server_answer())
    sent = io.BytesIO()

    def connect(cmd: bytes, path: Any, protocol_version: int | None = None) -> Any:
        proto = Protocol(answer.read, sent.write)
        return proto, (lambda: True), None  # the whole answer is already in the buffer

    client._connect = connect  # type: ignore[method-assign]
    wire.guard(client, "git://example/repo", timeout=None)
    received: list[bytes] = []
    result = client.fetch_pack(b"/repo", lambda refs, depth=None: [WANT], _Walker(),
                               received.append, depth=0x7FFFFFFF, protocol_version=0)
    assert result.new_shallow == {b"c" * 40}
    assert result.new_unshallow == {HAVES[0]}
    assert b"".join(received) == b"PACK-BYTES"
    assert sent.getvalue().count(b"have ") == len(HAVES)

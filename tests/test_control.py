"""Tests for warden.control: the wire format, then server and client over real UNIX sockets.

Raw sockets stand in for a misbehaving peer (garbage, oversize lines,
pipelining) so the server is checked against bytes, not against our client.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from warden.control import (
    MAX_LINE,
    ControlClient,
    ControlError,
    ControlProtocolError,
    ControlServer,
    ControlUnavailable,
    LineBuffer,
    Request,
    Response,
    decode_request,
    decode_response,
    encode_error,
    encode_request,
    encode_result,
)
from warden.errors import WardenError

NOBODY = 65534

ServerFactory = Callable[..., ControlServer]


@pytest.fixture()
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "run" / "ctl.sock"  # parent missing on purpose: start() creates it


@pytest.fixture()
def make_server(sock_path: Path) -> Iterator[ServerFactory]:
    servers: list[ControlServer] = []

    def make(path: Path | None = None, *, start: bool = True, **kw: Any) -> ControlServer:
        server = ControlServer(path or sock_path, **kw)
        server.register("echo", lambda args: args)
        servers.append(server)
        if start:
            server.start()
        return server

    yield make
    for server in servers:
        server.stop()


def raw_connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(2.0)
    sock.connect(str(path))
    return sock


def read_lines(sock: socket.socket, count: int) -> list[dict[str, Any]]:
    """Exactly ``count`` response lines, and nothing after them."""
    data = b""
    while data.count(b"\n") < count or not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    lines = data.splitlines()
    assert len(lines) == count, data
    return [json.loads(line) for line in lines]


def read_line(sock: socket.socket) -> dict[str, Any]:
    return read_lines(sock, 1)[0]


def read_eof(sock: socket.socket) -> None:
    """The server closed the connection (EOF, or a reset if it left our bytes unread)."""
    try:
        assert sock.recv(65536) == b""
    except ConnectionResetError:
        pass


# -- wire format (sans-I/O) ----------------------------------------------------


def test_request_round_trip() -> None:
    line = encode_request(7, "registrations", {"aor": "1001", "n": [1, 2.5, None, True], "é": "\u2028"})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert line.isascii()
    assert decode_request(line[:-1]) == Request(7, "registrations", {"aor": "1001", "n": [1, 2.5, None, True], "é": "\u2028"})
    assert json.loads(line) == {"id": 7, "op": "registrations", "args": {"aor": "1001", "n": [1, 2.5, None, True], "é": "\u2028"}}
    assert decode_request(b'{"id": 1, "op": "ping"}') == Request(1, "ping", {})


def test_response_round_trip() -> None:
    assert json.loads(encode_result(3, [1, "a"])) == {"id": 3, "ok": True, "result": [1, "a"]}
    assert decode_response(encode_result(3, None)[:-1]) == Response(3, True, result=None)
    assert json.loads(encode_error(4, "no such extension", 404)) == {
        "id": 4, "ok": False, "error": "no such extension", "status": 404,
    }
    err = decode_response(encode_error(None, "bad", 400)[:-1])
    assert err == Response(None, False, error="bad", status=400)
    with pytest.raises(ControlError, match="bad") as info:
        err.unwrap()
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("line", "message", "request_id"),
    [
        (b"not json", "request is not JSON: Expecting value at column 1", None),
        (b"\xff{}", "request is not UTF-8: invalid start byte at byte 0", None),
        (b"[1, 2]", "request must be a JSON object, not array", None),
        (b'{"op": "ping"}', "request has no 'id'", None),
        (b'{"id": "1", "op": "ping"}', "request 'id' must be an integer, not string", None),
        (b'{"id": true, "op": "ping"}', "request 'id' must be an integer, not boolean", None),
        (b'{"id": 2}', "request 'op' must be a non-empty string (missing)", 2),
        (b'{"id": 2, "op": ""}', "request 'op' must be a non-empty string (empty)", 2),
        (b'{"id": 2, "op": 5}', "request 'op' must be a non-empty string (a number)", 2),
        (b'{"id": 2, "op": ["x"]}', "request 'op' must be a non-empty string (an array)", 2),
        (b'{"id": 2, "op": "x", "args": [1]}', "request 'args' must be an object, not array", 2),
        (b'{"id": 2, "op": "x", "args": {"v": NaN}}', "request is not JSON: NaN is not valid JSON", None),
    ],
)
def test_decode_request_errors_are_precise(line: bytes, message: str, request_id: int | None) -> None:
    with pytest.raises(ControlProtocolError) as info:
        decode_request(line)
    assert str(info.value) == message
    assert info.value.status == 400
    assert info.value.request_id == request_id


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"ok": true, "result": 1}', "response has no 'id'"),
        (b'{"id": 1, "ok": "yes"}', "response 'ok' must be true or false, not string"),
        (b'{"id": 1, "ok": true}', "success response has no 'result'"),
        (b'{"id": 1, "ok": false, "status": 404}', "error response 'error' must be a string, not null"),
        (b'{"id": 1, "ok": false, "error": "x"}', "error response 'status' must be an integer, not null"),
    ],
)
def test_decode_response_errors_are_precise(line: bytes, message: str) -> None:
    with pytest.raises(ControlProtocolError, match=f"^{message}$".replace("(", r"\(").replace(")", r"\)")):
        decode_response(line)


def test_encode_refuses_unserializable_and_oversize() -> None:
    with pytest.raises(ControlProtocolError, match="request 'x' is not JSON-serializable") as info:
        encode_request(1, "x", {"when": object()})
    assert info.value.status == 400
    with pytest.raises(ControlProtocolError, match="result is not JSON-serializable") as info:
        encode_result(1, float("nan"))
    assert info.value.status == 500
    with pytest.raises(ControlProtocolError, match=f"over the {MAX_LINE}-byte line limit") as info:
        encode_request(1, "x", {"blob": "a" * MAX_LINE})
    assert info.value.status == 413


def test_line_buffer_splits_and_bounds() -> None:
    buf = LineBuffer(limit=10)
    buf.feed(b"ab")
    assert buf.next_line() is None
    buf.feed(b"c\n\nde\nf")
    assert [buf.next_line(), buf.next_line(), buf.next_line(), buf.next_line()] == [b"abc", b"", b"de", None]
    assert buf.pending == 1
    buf.feed(b"123456789\n")  # exactly 10 bytes: allowed
    assert buf.next_line() == b"f123456789"
    buf.feed(b"12345678901")  # 11 bytes, no newline yet: already too long
    with pytest.raises(ControlProtocolError, match="line exceeds 10 bytes") as info:
        buf.next_line()
    assert info.value.status == 413
    buf = LineBuffer(limit=10)
    buf.feed(b"12345678901\nok\n")
    with pytest.raises(ControlProtocolError, match=r"line exceeds 10 bytes \(11 bytes\)"):
        buf.next_line()


# -- server and client ----------------------------------------------------------


def test_round_trip_and_ping(make_server: ServerFactory, sock_path: Path) -> None:
    make_server()
    with ControlClient(sock_path) as client:
        assert client.call("ping") == {"pong": True, "pid": os.getpid()}
        assert client.call("echo", aor="1001", op="named op", n=[1, {"a": None}]) == {
            "aor": "1001", "op": "named op", "n": [1, {"a": None}],
        }


def test_handler_control_error_keeps_its_status(make_server: ServerFactory, sock_path: Path) -> None:
    server = make_server()

    def lookup(args: dict[str, Any]) -> object:
        raise ControlError(f"no such extension {args['ext']}", 404)

    server.register("lookup", lookup)
    client = ControlClient(sock_path)
    with pytest.raises(ControlError, match="^no such extension 1001$") as info:
        client.call("lookup", ext="1001")
    assert info.value.status == 404
    assert not isinstance(info.value, ControlUnavailable)


def test_unknown_operation_is_404(make_server: ServerFactory, sock_path: Path) -> None:
    make_server()
    with pytest.raises(ControlError, match="unknown operation 'reboot'") as info:
        ControlClient(sock_path).call("reboot")
    assert info.value.status == 404


def test_handler_exception_is_500_and_server_keeps_serving(
    make_server: ServerFactory, sock_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server()

    def boom(args: dict[str, Any]) -> object:
        raise RuntimeError("secret internal detail")

    server.register("boom", boom)
    server.register("unsendable", lambda args: {"when": object()})
    client = ControlClient(sock_path)
    with caplog.at_level(logging.ERROR, logger="warden.control"):
        with pytest.raises(ControlError) as info:
            client.call("boom")
        assert info.value.status == 500
        assert "internal error" in str(info.value) and "secret" not in str(info.value)
        with pytest.raises(ControlError, match="internal error") as info:
            client.call("unsendable")
        assert info.value.status == 500
    record = next(r for r in caplog.records if "'boom' failed" in r.getMessage())
    assert record.exc_info is not None and "secret internal detail" in str(record.exc_info[1])
    assert any("'unsendable'" in r.getMessage() and "JSON-serializable" in r.getMessage() for r in caplog.records)
    assert client.call("ping")["pong"] is True


def test_oversize_line_is_refused_and_closed(make_server: ServerFactory, sock_path: Path) -> None:
    server = make_server()
    server.register("len", lambda args: len(args["s"]))
    # A line of exactly MAX_LINE bytes is fine.
    head = b'{"id":1,"op":"len","args":{"s":"'
    tail = b'"}}'
    fill = MAX_LINE - len(head) - len(tail)
    with raw_connect(sock_path) as sock:
        sock.sendall(head + b"x" * fill + tail + b"\n")
        assert read_line(sock) == {"id": 1, "ok": True, "result": fill}
    # One byte more, and the newline never even arrives.
    with raw_connect(sock_path) as sock:
        sock.sendall(b"x" * (MAX_LINE + 1))
        reply = read_line(sock)
        assert reply["id"] is None and reply["ok"] is False and reply["status"] == 413
        assert f"line exceeds {MAX_LINE} bytes" in reply["error"]
        read_eof(sock)
    # The client refuses to send one, and stays usable.
    client = ControlClient(sock_path)
    with pytest.raises(ControlProtocolError, match="line limit") as info:
        client.call("len", s="x" * MAX_LINE)
    assert info.value.status == 413
    assert client.call("len", s="abc") == 3


def test_garbage_lines_get_errors_and_connection_stays_usable(make_server: ServerFactory, sock_path: Path) -> None:
    make_server()
    with raw_connect(sock_path) as sock:
        sock.sendall(b"hello there\n")
        assert read_line(sock) == {
            "id": None, "ok": False, "status": 400, "error": "request is not JSON: Expecting value at column 1",
        }
        sock.sendall(b"\xff\xfe\n")
        assert "not UTF-8" in read_line(sock)["error"]
        sock.sendall(b'{"id": 9, "op": ["ping"]}\n')
        reply = read_line(sock)
        assert reply["id"] == 9 and reply["status"] == 400 and "'op'" in reply["error"]
        # Blank lines are skipped; pipelined requests are answered in order.
        sock.sendall(b'\n  \n{"id": 10, "op": "ping"}\n{"id": 11, "op": "echo", "args": {"a": 1}}\n')
        first, second = read_lines(sock, 2)
        assert first["id"] == 10 and first["result"]["pong"] is True
        assert second == {"id": 11, "ok": True, "result": {"a": 1}}


def test_slow_handler_does_not_block_another_client(make_server: ServerFactory, sock_path: Path) -> None:
    server = make_server()
    entered, release = threading.Event(), threading.Event()

    def slow(args: dict[str, Any]) -> object:
        entered.set()
        release.wait(5.0)
        return "done"

    server.register("slow", slow)
    results: list[object] = []
    worker = threading.Thread(target=lambda: results.append(ControlClient(sock_path).call("slow")))
    worker.start()
    try:
        assert entered.wait(2.0)
        other = ControlClient(sock_path, timeout=1.0)
        started = time.monotonic()
        assert other.call("ping")["pong"] is True
        assert other.call("echo", x=1) == {"x": 1}
        assert time.monotonic() - started < 0.5
        assert not results  # still blocked
    finally:
        release.set()
        worker.join(2.0)
    assert results == ["done"]


def test_client_is_thread_safe(make_server: ServerFactory, sock_path: Path) -> None:
    make_server()
    client = ControlClient(sock_path)
    errors: list[str] = []

    def work(n: int) -> None:
        for i in range(25):
            got = client.call("echo", n=n, i=i)
            if got != {"n": n, "i": i}:
                errors.append(f"{n}/{i}: {got}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5.0)
    assert errors == []
    assert 1 <= len(client._idle) <= client.max_idle


def test_client_timeout_then_recovers(make_server: ServerFactory, sock_path: Path) -> None:
    server = make_server()
    release = threading.Event()
    server.register("stuck", lambda args: release.wait(5.0))
    client = ControlClient(sock_path, timeout=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(ControlUnavailable, match="did not answer 'stuck' within 0.3 s") as info:
            client.call("stuck")
        assert info.value.status == 504
        assert time.monotonic() - started < 1.0
    finally:
        release.set()
    assert client.call("ping")["pong"] is True  # a fresh connection: no stale answer read


def test_socket_file_mode(make_server: ServerFactory, sock_path: Path, tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        make_server()
        other = make_server(tmp_path / "other.sock", mode=0o600)
    finally:
        os.umask(old_umask)
    st = os.stat(sock_path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert stat.S_IMODE(os.stat(other.path).st_mode) == 0o600


def test_stop_removes_socket_file(make_server: ServerFactory, sock_path: Path) -> None:
    server = make_server()
    assert sock_path.exists()
    server.stop()
    assert not sock_path.exists()
    server.stop()  # idempotent


def test_stale_socket_file_is_replaced(make_server: ServerFactory, sock_path: Path) -> None:
    sock_path.parent.mkdir()
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(sock_path))
    dead.close()  # the file stays; nobody listens
    with pytest.raises(ControlUnavailable, match="refuses connections"):
        ControlClient(sock_path).call("ping")
    make_server()
    assert ControlClient(sock_path).call("ping")["pong"] is True


def test_non_socket_file_is_not_replaced(make_server: ServerFactory, sock_path: Path) -> None:
    sock_path.parent.mkdir()
    sock_path.write_text("precious")
    with pytest.raises(WardenError, match="exists and is not a socket"):
        make_server()
    assert sock_path.read_text() == "precious"


def test_second_server_on_live_path_is_refused(make_server: ServerFactory, sock_path: Path) -> None:
    first = make_server()
    first.register("who", lambda args: "first")
    inode = os.stat(sock_path).st_ino
    second = make_server(start=False)
    with pytest.raises(WardenError, match="already running"):
        second.start()
    second.stop()  # a server that never started removes nothing
    assert os.stat(sock_path).st_ino == inode
    assert ControlClient(sock_path).call("who") == "first"


def test_duplicate_registration_is_refused(make_server: ServerFactory) -> None:
    server = make_server(start=False)
    with pytest.raises(WardenError, match="'echo' is already registered"):
        server.register("echo", lambda args: None)
    with pytest.raises(WardenError, match="'ping' is already registered"):
        server.register("ping", lambda args: None)


def test_client_on_missing_path_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "ctl.sock"
    with pytest.raises(ControlUnavailable) as info:
        ControlClient(path).call("ping")
    assert str(info.value) == f"PBX not running (no control socket at {path})"
    assert info.value.status == 503
    assert isinstance(info.value, ControlError) and isinstance(info.value, WardenError)


def test_client_reconnects_after_server_restart(make_server: ServerFactory, sock_path: Path) -> None:
    first = make_server()
    first.register("generation", lambda args: 1)
    client = ControlClient(sock_path)
    assert client.call("generation") == 1
    assert client.call("generation") == 1
    assert len(client._idle) == 1  # one connection, reused
    first.stop()
    with pytest.raises(ControlUnavailable, match="PBX not running"):
        client.call("generation")
    second = make_server()
    second.register("generation", lambda args: 2)
    assert client.call("generation") == 2


def test_idle_connection_closed_by_server_is_replaced(make_server: ServerFactory, sock_path: Path) -> None:
    make_server(idle_timeout=0.2)
    client = ControlClient(sock_path)
    assert client.call("ping")["pong"] is True
    with raw_connect(sock_path) as sock:
        started = time.monotonic()
        read_eof(sock)
        assert 0.1 < time.monotonic() - started < 1.5
    assert client.call("echo", again=True) == {"again": True}


def test_connection_limit(make_server: ServerFactory, sock_path: Path) -> None:
    make_server(max_connections=2)
    held = [raw_connect(sock_path) for _ in range(2)]
    try:
        for n, sock in enumerate(held):
            sock.sendall(b'{"id": %d, "op": "ping"}\n' % n)
            assert read_line(sock)["ok"] is True
        with raw_connect(sock_path) as extra:
            reply = read_line(extra)
            assert reply["status"] == 503 and "too many control connections" in reply["error"]
            read_eof(extra)
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 2.0
    while True:  # the server notices the closes on its own threads
        try:
            assert ControlClient(sock_path).call("ping")["pong"] is True
            break
        except ControlError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


# -- peer credentials ---------------------------------------------------------------


def _call_as_nobody(path: Path) -> str:
    """Fork, become nobody, call ping; the child reports its outcome through a pipe."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        outcome = "child failed"
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                outcome = f"ok {ControlClient(path, timeout=2.0).call('ping')['pong']}"
            except ControlError as exc:
                outcome = f"{type(exc).__name__} {exc.status} {exc}"
        except BaseException as exc:  # noqa: BLE001 - report anything to the parent
            outcome = f"child error {exc!r}"
        finally:
            os.write(write_fd, outcome.encode())
            os._exit(0)
    os.close(write_fd)
    deadline = time.monotonic() + 5.0
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("child calling as nobody did not finish")
        time.sleep(0.01)
    with os.fdopen(read_fd, "rb") as pipe:
        return pipe.read().decode()


@pytest.fixture()
def shared_dir() -> Iterator[Path]:
    """A directory another uid can reach (tmp_path's ancestors are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="warden-ctl-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another uid")
def test_peer_credentials_refuse_other_uids(
    make_server: ServerFactory, shared_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = shared_dir / "ctl.sock"
    make_server(path, mode=0o666)
    with caplog.at_level(logging.WARNING, logger="warden.control"):
        outcome = _call_as_nobody(path)
    assert outcome == f"ControlError 403 permission denied: uid {NOBODY} may not use the control socket"
    assert any(f"uid {NOBODY}" in r.getMessage() and "refused" in r.getMessage() for r in caplog.records)
    assert ControlClient(path).call("ping")["pong"] is True  # root still allowed


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another uid")
def test_peer_credentials_admit_allowed_uids(make_server: ServerFactory, shared_dir: Path) -> None:
    path = shared_dir / "ctl.sock"
    make_server(path, mode=0o666, allowed_uids={NOBODY})
    assert _call_as_nobody(path) == "ok True"


def test_large_results_pass_while_requests_stay_bounded(tmp_path: Path) -> None:
    """10,000 bindings are several MB: a result may exceed the request line limit."""
    from warden.control import MAX_LINE

    big = [{"aor": str(i), "contact": "sip:x@192.0.2.1:5060;transport=tls" + "x" * 400} for i in range(8000)]
    with ControlServer(tmp_path / "c.sock") as server:
        server.register("big", lambda args: big)
        client = ControlClient(tmp_path / "c.sock", timeout=10)
        assert client.call("big") == big
        with pytest.raises(ControlError) as info:
            client.call("big", pad="y" * (MAX_LINE + 10))
        assert info.value.status == 413

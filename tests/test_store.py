"""The SQLite store: schema migrations, files, extensions, bindings, CDRs, concurrency."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from warden.errors import StoreError, WardenError
from warden.sip.auth import ha1
from warden.store import (
    CDR,
    DISPOSITIONS,
    MEMORY,
    SCHEMA_VERSION,
    Binding,
    Extension,
    ExtensionExists,
    NoSuchExtension,
    Store,
)

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct-horse-battery"
REALM = "warden"
T0 = 1_700_000_000.0


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def _binding(aor: str = "1001", contact: str = "sip:1001@192.0.2.10:5060", **kw: object) -> Binding:
    fields: dict[str, object] = {
        "aor": aor, "contact": contact, "expires_at": T0 + 3600, "call_id": "reg-1", "cseq": 1,
        "transport": "udp", "source_host": "192.0.2.10", "source_port": 5060, "registered_at": T0,
    }
    fields.update(kw)
    return Binding(**fields)  # type: ignore[arg-type]


@pytest.fixture()
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "lib" / "warden.db"


@pytest.fixture()
def store(db_path: Path) -> Iterator[Store]:
    s = Store(db_path)
    yield s
    s.close()


# --- opening, schema and files ------------------------------------------------------------------


def test_migrates_an_empty_file_to_the_current_schema(store: Store, db_path: Path) -> None:
    with _raw(db_path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"extensions", "bindings", "cdrs"} <= tables
    assert store._query("PRAGMA foreign_keys")[0][0] == 1
    assert store._query("PRAGMA synchronous")[0][0] == 1  # NORMAL
    assert store._query("PRAGMA busy_timeout")[0][0] >= 1000


def test_an_existing_zero_byte_file_is_initialised(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    with Store(path) as s:
        assert s.list_extensions() == []


def test_reopen_keeps_data_and_does_not_migrate_again(db_path: Path) -> None:
    with Store(db_path) as s:
        s.add_extension("1001", PASSWORD, realm=REALM, display_name="Alice")
    with Store(db_path) as s:
        ext = s.get_extension("1001")
        assert ext is not None and ext.display_name == "Alice"
    with _raw(db_path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_refuses_a_schema_newer_than_it_knows(db_path: Path) -> None:
    Store(db_path).close()
    with _raw(db_path) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match=r"schema version \d+ is newer") as info:
        Store(db_path)
    assert str(db_path) in str(info.value)
    with _raw(db_path) as raw:  # left untouched
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a database"):
        Store(path)


def test_creates_folders_0750_and_file_0640_whatever_the_umask(tmp_path: Path) -> None:
    existing = tmp_path / "existing"
    existing.mkdir(mode=0o755)
    os.chmod(existing, 0o755)
    path = existing / "a" / "b" / "warden.db"
    old = os.umask(0o002)
    try:
        s = Store(path)
    finally:
        os.umask(old)
    try:
        s.add_extension("1001", PASSWORD, realm=REALM)
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        assert stat.S_IMODE((existing / "a").stat().st_mode) == 0o750
        assert stat.S_IMODE((existing / "a" / "b").stat().st_mode) == 0o750
        assert stat.S_IMODE(existing.stat().st_mode) == 0o755  # not ours: untouched
        wal = Path(f"{path}-wal")
        assert wal.exists() and stat.S_IMODE(wal.stat().st_mode) == 0o640
    finally:
        s.close()


def test_keeps_the_mode_of_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "warden.db"
    path.touch(mode=0o600)
    os.chmod(path, 0o600)
    Store(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_closed_store_raises_and_close_is_idempotent(db_path: Path) -> None:
    s = Store(db_path)
    s.close()
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.get_extension("1001")


def test_memory_store() -> None:
    with Store(MEMORY) as s:
        s.add_extension("1001", PASSWORD, realm=REALM)
        assert [e.number for e in s.list_extensions()] == ["1001"]


def test_store_error_is_a_warden_error_with_a_status() -> None:
    assert issubclass(StoreError, WardenError)
    assert StoreError("x").status == 400
    assert StoreError("x", status=503).status == 503
    assert ExtensionExists("x").status == 409
    assert NoSuchExtension("x").status == 404


# --- extensions ---------------------------------------------------------------------------------


def test_extension_crud(store: Store) -> None:
    ext = store.add_extension("1001", PASSWORD, realm=REALM, display_name="Alice")
    assert (ext.number, ext.display_name, ext.realm, ext.enabled) == ("1001", "Alice", REALM, True)
    assert ext.created_at == ext.updated_at > 0
    assert store.get_extension("1001") == ext
    assert store.get_extension("1999") is None
    for number in ("alice", "200", "1002", "30", "bob.smith"):
        store.add_extension(number, PASSWORD, realm=REALM, enabled=number != "30")
    assert [e.number for e in store.list_extensions()] == ["30", "200", "1001", "1002", "alice", "bob.smith"]

    updated = store.update_extension("1001", display_name="Alice Smith", enabled=False)
    assert (updated.display_name, updated.enabled) == ("Alice Smith", False)
    assert updated.updated_at >= ext.updated_at
    assert store.get_extension("1001") == updated
    assert store.update_extension("1001") == updated  # nothing to change
    assert store.update_extension("1001", enabled=True).enabled is True

    assert store.delete_extension("1001") == 0
    assert store.get_extension("1001") is None
    with pytest.raises(NoSuchExtension, match="no extension 1001") as info:
        store.delete_extension("1001")
    assert info.value.status == 404


def test_extension_errors(store: Store) -> None:
    store.add_extension("1001", PASSWORD, realm=REALM)
    with pytest.raises(ExtensionExists, match="1001 already exists") as exists:
        store.add_extension("1001", PASSWORD, realm=REALM)
    assert exists.value.status == 409
    for call in (
        lambda: store.update_extension("1999", enabled=False),
        lambda: store.set_password("1999", PASSWORD, realm=REALM),
    ):
        with pytest.raises(NoSuchExtension):
            call()
    with pytest.raises(StoreError, match="display name"):
        store.add_extension("1002", PASSWORD, realm=REALM, display_name="evil\r\nVia: x")


@pytest.mark.parametrize("number", ["", "10 01", "1001@example.com", "x" * 33, "1001\n", "<1001>", "10;01"])
def test_invalid_numbers_are_refused(store: Store, number: str) -> None:
    with pytest.raises(StoreError, match="invalid extension number") as info:
        store.add_extension(number, PASSWORD, realm=REALM)
    assert info.value.status == 400


@pytest.mark.parametrize("number", ["1", "1001", "9" * 32, "alice", "bob.smith", "front-desk_2"])
def test_valid_numbers(store: Store, number: str) -> None:
    assert store.add_extension(number, PASSWORD, realm=REALM).number == number


def test_password_policy(store: Store) -> None:
    with pytest.raises(StoreError, match="at least 8 characters") as info:
        store.add_extension("1001", "short77", realm=REALM)
    assert info.value.status == 400 and "short77" not in str(info.value)
    store.add_extension("1001", "12345678", realm=REALM)
    with pytest.raises(StoreError, match="at least 8"):
        store.set_password("1001", "", realm=REALM)


def test_ha1_matches_the_digest_module_and_credentials(store: Store) -> None:
    ext = store.add_extension("1001", PASSWORD, realm=REALM)
    assert ext.ha1_md5 == ha1("1001", REALM, PASSWORD, "MD5")
    assert ext.ha1_sha256 == ha1("1001", REALM, PASSWORD, "SHA-256")
    assert store.credentials("1001") == (ext.ha1_md5, ext.ha1_sha256, REALM)

    store.set_password("1001", "another-secret", realm="pbx.example.com")
    assert store.credentials("1001") == (
        ha1("1001", "pbx.example.com", "another-secret", "MD5"),
        ha1("1001", "pbx.example.com", "another-secret", "SHA-256"),
        "pbx.example.com",
    )
    store.update_extension("1001", enabled=False)
    assert store.credentials("1001") is None
    assert store.credentials("1999") is None


def test_secrets_stay_out_of_reprs_and_json(store: Store) -> None:
    ext = store.add_extension("1001", PASSWORD, realm=REALM)
    for text in (repr(ext), json.dumps(ext.to_dict())):
        assert ext.ha1_md5 not in text and ext.ha1_sha256 not in text and PASSWORD not in text


def test_plaintext_password_is_nowhere_in_the_files(db_path: Path) -> None:
    second = "another-Pa55word!"

    def all_bytes() -> bytes:
        return b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))

    s = Store(db_path)
    s.add_extension("1001", PASSWORD, realm=REALM)
    s.set_password("1001", second, realm=REALM)
    s.add_extension("1002", PASSWORD, realm=REALM)
    blob = all_bytes()  # database and WAL while open
    assert ha1("1002", REALM, PASSWORD, "SHA-256").encode() in blob  # we are looking in the right place
    s.close()
    blob += all_bytes()
    for secret in (PASSWORD, second):
        assert secret.encode() not in blob
        assert secret.encode("utf-16-le") not in blob


def test_extension_is_frozen() -> None:
    ext = Extension("1", "", REALM, "a", "b", True, 0.0, 0.0)
    with pytest.raises(AttributeError):
        ext.enabled = False  # type: ignore[misc]


# --- bindings -----------------------------------------------------------------------------------


def test_binding_keys() -> None:
    assert _binding().key == "sip:1001@192.0.2.10:5060"
    inst = "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"
    assert _binding(instance_id=inst).key == inst
    assert _binding(instance_id=inst, reg_id=2).key == f"{inst};reg-id=2"
    assert _binding().updated_at == T0


def test_binding_upsert_refresh_and_lookup(store: Store) -> None:
    store.add_extension("1001", PASSWORD, realm=REALM)
    first = _binding(transport="tls", tls_version="TLSv1.3", tls_cipher="TLS_AES_256_GCM_SHA384",
                     flow_token="flow-7", user_agent="Yealink T54W", local_host="198.51.100.1", local_port=5061)
    store.upsert_binding(first)
    assert store.bindings("1001") == [first]
    refreshed = _binding(transport="tls", cseq=2, expires_at=T0 + 7200, registered_at=T0 + 60, updated_at=T0 + 60)
    store.upsert_binding(refreshed)
    (row,) = store.bindings("1001")
    assert (row.cseq, row.expires_at, row.updated_at, row.flow_token) == (2, T0 + 7200, T0 + 60, "")
    assert row.registered_at == T0  # the first registration time is kept
    assert store.count_bindings() == 1


def test_outbound_flows_are_separate_bindings(store: Store) -> None:
    store.add_extension("1001", PASSWORD, realm=REALM)
    inst = "<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"
    for reg_id, q in ((1, 0.5), (2, 1.0)):
        store.upsert_binding(_binding(instance_id=inst, reg_id=reg_id, q=q, flow_token=f"flow-{reg_id}"))
    got = store.bindings("1001")
    assert [b.reg_id for b in got] == [2, 1]  # best q first
    assert store.remove_binding("1001", f"{inst};reg-id=2") is True
    assert store.remove_binding("1001", f"{inst};reg-id=2") is False
    assert [b.reg_id for b in store.bindings("1001")] == [1]


def test_bindings_expire(store: Store) -> None:
    for aor in ("1001", "1002"):
        store.add_extension(aor, PASSWORD, realm=REALM)
    store.upsert_binding(_binding("1001", "sip:a@192.0.2.1", expires_at=T0 + 10))
    store.upsert_binding(_binding("1001", "sip:b@192.0.2.2", expires_at=T0 + 100))
    store.upsert_binding(_binding("1002", "sip:c@192.0.2.3", expires_at=T0 + 20))
    assert len(store.bindings()) == 3
    assert [b.contact for b in store.bindings(now=T0 + 15)] == ["sip:b@192.0.2.2", "sip:c@192.0.2.3"]
    assert store.count_bindings("1001", now=T0 + 15) == 1
    assert store.binding_counts(now=T0 + 15) == {"1001": 1, "1002": 1}
    assert store.binding_counts() == {"1001": 2, "1002": 1}
    expired = store.expire_bindings(T0 + 20)  # expires_at <= now has expired
    assert sorted(b.contact for b in expired) == ["sip:a@192.0.2.1", "sip:c@192.0.2.3"]
    assert [b.contact for b in store.bindings()] == ["sip:b@192.0.2.2"]
    assert store.expire_bindings(T0 + 20) == []
    assert store.remove_bindings("1001") == 1
    assert store.count_bindings() == 0


def test_bindings_survive_a_reopen(db_path: Path) -> None:
    with Store(db_path) as s:
        s.add_extension("1001", PASSWORD, realm=REALM)
        b = _binding(path="<sip:edge.example.com;lr>", q=0.7)
        s.upsert_binding(b)
    with Store(db_path) as s:
        assert s.bindings("1001", now=T0) == [b]


def test_a_store_refuses_to_cross_fork(store: Store) -> None:
    store.add_extension("1001", PASSWORD, realm=REALM)
    pid = os.fork()
    if pid == 0:  # the child must not use the parent's SQLite connection
        try:
            store.get_extension("1001")
        except StoreError as exc:
            os._exit(0 if "cannot cross fork" in str(exc) else 2)
        except BaseException:
            os._exit(3)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.get_extension("1001") is not None  # the parent's store still works


def test_a_batch_commits_its_writes_once_at_the_end(store: Store, db_path: Path) -> None:
    store.add_extension("1001", PASSWORD, realm=REALM)
    store.add_extension("1002", PASSWORD, realm=REALM)
    with _raw(db_path) as other:  # another process's view
        with store.batch():
            store.upsert_binding(_binding())
            assert store.bindings("1001", now=T0) == [_binding()]  # the batch sees its own writes
            assert other.execute("SELECT count(*) FROM bindings").fetchone()[0] == 0  # not committed yet
            cdr = store.start_cdr("call-1", "1001", "1002", T0, caller_transport="udp")
            with pytest.raises(NoSuchExtension):  # a failed write does not spoil the batch
                store.upsert_binding(_binding(aor="9999"))
        assert other.execute("SELECT count(*) FROM bindings").fetchone()[0] == 1
        assert other.execute("SELECT count(*) FROM cdrs WHERE id = ?", (cdr,)).fetchone()[0] == 1
    assert not store._conn.in_transaction  # type: ignore[union-attr]
    with store.batch():  # a batch without writes opens no transaction
        assert store.bindings("1001", now=T0) == [_binding()]
        assert not store._conn.in_transaction  # type: ignore[union-attr]


def test_a_batch_survives_kill_9_once_it_ended(db_path: Path) -> None:
    script = f"""
import os, signal, sys
sys.path.insert(0, {str(ROOT)!r})
sys.path.insert(0, {str(ROOT / "tests")!r})
from test_store import _binding
from warden.store import Store
s = Store({str(db_path)!r})
s.add_extension("1001", {PASSWORD!r}, realm={REALM!r})
with s.batch():
    s.upsert_binding(_binding())
    s.upsert_binding(_binding(contact="sip:1001@192.0.2.11:5060"))
with s.batch():
    s.upsert_binding(_binding(contact="sip:1001@192.0.2.12:5060"))
    os.kill(os.getpid(), signal.SIGKILL)  # dies inside an open batch
"""
    proc = subprocess.run([sys.executable, "-c", script], env=_env(), timeout=60)
    assert proc.returncode == -signal.SIGKILL
    with Store(db_path) as s:
        assert sorted(b.contact for b in s.bindings("1001", now=T0)) == [
            "sip:1001@192.0.2.10:5060", "sip:1001@192.0.2.11:5060",
        ]


def test_deleting_an_extension_removes_its_bindings(store: Store) -> None:
    store.add_extension("1001", PASSWORD, realm=REALM)
    store.add_extension("1002", PASSWORD, realm=REALM)
    store.upsert_binding(_binding("1001", "sip:a@192.0.2.1"))
    store.upsert_binding(_binding("1001", "sip:b@192.0.2.2"))
    store.upsert_binding(_binding("1002", "sip:c@192.0.2.3"))
    assert store.delete_extension("1001") == 2
    assert [b.aor for b in store.bindings()] == ["1002"]


def test_binding_errors(store: Store) -> None:
    with pytest.raises(NoSuchExtension):
        store.upsert_binding(_binding("1999"))
    store.add_extension("1001", PASSWORD, realm=REALM)
    for bad, match in (
        ({"transport": "sctp"}, "transport"),
        ({"source_port": 70000}, "source_port"),
        ({"q": 1.5}, "q must be"),
        ({"expires_at": float("nan")}, "expires_at"),
    ):
        with pytest.raises(StoreError, match=match):
            store.upsert_binding(_binding(**bad))
    assert store.count_bindings() == 0


# --- CDRs ---------------------------------------------------------------------------------------


def test_cdr_lifecycle(store: Store) -> None:
    cdr_id = store.start_cdr("call-1@pbx", "1001", "1002", T0, caller_transport="tls",
                             caller_tls_version="TLSv1.3", caller_tls_cipher="TLS_AES_256_GCM_SHA384",
                             caller_source="192.0.2.10:50123")
    started = store.get_cdr(cdr_id)
    assert started is not None
    assert (started.ended_at, started.disposition, started.duration) == (None, None, 0)
    store.answer_cdr(cdr_id, T0 + 5, callee_contact="sip:1002@192.0.2.20:5061", callee_transport="tls",
                     callee_tls_version="TLSv1.2", callee_tls_cipher="ECDHE-RSA-AES256-GCM-SHA384")
    store.end_cdr(cdr_id, T0 + 65.5, "answered", "callee hung up")
    cdr = store.get_cdr(cdr_id)
    assert cdr == CDR(
        cdr_id, "call-1@pbx", "1001", "1002", T0, T0 + 5, T0 + 65.5, 60.5, "answered", "callee hung up",
        "tls", "TLSv1.3", "TLS_AES_256_GCM_SHA384", "192.0.2.10:50123",
        "sip:1002@192.0.2.20:5061", "tls", "TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384",
    )
    assert json.loads(json.dumps(cdr.to_dict()))["duration"] == 60.5
    assert store.get_cdr(cdr_id + 1000) is None


def test_unanswered_cdr_has_no_duration_and_errors(store: Store) -> None:
    cdr_id = store.start_cdr("call-2", "1001", "1003", T0, caller_transport="udp")
    with pytest.raises(StoreError, match="unknown disposition") as bad:
        store.end_cdr(cdr_id, T0 + 30, "hung", "x")
    assert bad.value.status == 400
    store.end_cdr(cdr_id, T0 + 30, "no_answer", "480 Temporarily Unavailable")
    cdr = store.get_cdr(cdr_id)
    assert cdr is not None and (cdr.duration, cdr.answered_at, cdr.disposition) == (0, None, "no_answer")
    for call, status in (
        (lambda: store.end_cdr(cdr_id, T0 + 31, "failed", None), 409),
        (lambda: store.answer_cdr(cdr_id, T0 + 31), 409),
        (lambda: store.answer_cdr(9999, T0), 404),
        (lambda: store.end_cdr(9999, T0, "failed", None), 404),
    ):
        with pytest.raises(StoreError) as info:
            call()
        assert info.value.status == status


def test_cdr_filters_and_pagination(store: Store) -> None:
    ids = []
    for i in range(30):
        caller = "1001" if i % 2 else "1002"
        cdr_id = store.start_cdr(f"c{i}", caller, "1003", T0 + i, caller_transport="tls")
        store.end_cdr(cdr_id, T0 + i + 1, DISPOSITIONS[i % 3], None)
        ids.append(cdr_id)
    page = store.query_cdrs(limit=10)
    assert [c.id for c in page] == ids[::-1][:10]  # newest first
    assert [c.id for c in store.query_cdrs(limit=10, offset=25)] == ids[::-1][25:]
    assert store.count_cdrs() == 30
    assert store.count_cdrs(caller="1001") == 15
    assert all(c.caller == "1001" for c in store.query_cdrs(caller="1001"))
    assert store.count_cdrs(callee="1003") == 30 and store.count_cdrs(callee="1001") == 0
    window = store.query_cdrs(since=T0 + 10, until=T0 + 20)
    assert [c.started_at for c in window] == [T0 + i for i in range(19, 9, -1)]
    assert store.count_cdrs(since=T0 + 10, until=T0 + 20, disposition="busy") == sum(
        1 for i in range(10, 20) if DISPOSITIONS[i % 3] == "busy"
    )
    assert store.query_cdrs(caller="1001", disposition="answered", limit=2)[0].id == ids[27]
    for kw in ({"limit": 0}, {"limit": 10_001}, {"offset": -1}, {"disposition": "bogus"}):
        with pytest.raises(StoreError):
            store.query_cdrs(**kw)


# --- concurrency and durability -----------------------------------------------------------------


def test_two_threads_write_at_once(store: Store) -> None:
    errors: list[BaseException] = []

    def work(prefix: str) -> None:
        try:
            for i in range(150):
                store.add_extension(f"{prefix}{i}", PASSWORD, realm=REALM)
                cdr_id = store.start_cdr(f"{prefix}-{i}", f"{prefix}{i}", "1", T0 + i, caller_transport="udp")
                store.end_cdr(cdr_id, T0 + i + 1, "busy", None)
                assert store.credentials(f"{prefix}{i}") is not None
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in ("1", "2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.list_extensions()) == 300
    assert store.count_cdrs(disposition="busy") == 300


_WRITER = """
import sys
from warden.store import Store
with Store(sys.argv[1]) as s:
    for i in range(int(sys.argv[2])):
        s.end_cdr(s.start_cdr(f"proc-{i}", "2001", "2002", float(i), caller_transport="tcp"), i + 1.0, "busy", None)
"""


def test_a_second_process_writes_while_we_write(store: Store, db_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(db_path), "200"], env=_env(), cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    for i in range(200):
        store.end_cdr(store.start_cdr(f"test-{i}", "1001", "1002", float(i), caller_transport="udp"),
                      i + 1.0, "answered", None)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert store.count_cdrs(caller="2001") == 200
    assert store.count_cdrs(caller="1001") == 200


def test_the_cli_adds_an_extension_while_a_store_is_open(store: Store, db_path: Path, tmp_path: Path) -> None:
    store.add_extension("1001", PASSWORD, realm=REALM)
    cfg = tmp_path / "config.yml"
    cfg.write_text(f"store: {{path: '{db_path}'}}\nsip: {{realm: {REALM}}}\n")
    run = subprocess.run([sys.executable, "-m", "warden", "--config", str(cfg), "ext", "add", "1002",
                          "--password", PASSWORD], env=_env(), cwd=ROOT, capture_output=True, text=True,
                         timeout=30, check=False)
    assert run.returncode == 0, run.stderr
    assert store.credentials("1002") == (ha1("1002", REALM, PASSWORD, "MD5"),
                                         ha1("1002", REALM, PASSWORD, "SHA-256"), REALM)
    store.add_extension("1003", PASSWORD, realm=REALM)  # our connection still writes
    assert [e.number for e in store.list_extensions()] == ["1001", "1002", "1003"]


_KILLED = """
import sys, time
from warden.store import Store
s = Store(sys.argv[1])
s.add_extension("1001", "correct-horse-battery", realm="warden")
cdr = s.start_cdr("doomed", "1001", "1002", 1.0, caller_transport="tls")
s.answer_cdr(cdr, 2.0)
print(cdr, flush=True)
time.sleep(60)
"""


def test_what_was_written_survives_kill_9(db_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, str(db_path)], env=_env(), cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        cdr_id = int(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    with Store(db_path) as s:
        cdr = s.get_cdr(cdr_id)
        assert cdr is not None and cdr.answered_at == 2.0 and cdr.ended_at is None
        assert s.get_extension("1001") is not None


_OPENER = """
import sys
from warden.store import Store
with Store(sys.argv[1]) as s:
    s.start_cdr("first-boot", "1001", "1002", 1.0, caller_transport="udp")
"""


@pytest.mark.parametrize("openers", [4, 16])
def test_several_processes_create_the_same_new_file_at_once(tmp_path: Path, openers: int) -> None:
    # The PBX and its API workers on first boot. SQLite answers the switch to WAL with
    # "database is locked" at once while another connection writes to the new file; CI
    # once saw 1 of 4 openers fail here, and 16 shell-launched openers failed 16 of 640
    # times. The deterministic case is the next test.
    path = tmp_path / "fresh" / "warden.db"
    procs = [subprocess.Popen([sys.executable, "-c", _OPENER, str(path)], env=_env(), cwd=ROOT,
                              stderr=subprocess.PIPE, text=True) for _ in range(openers)]
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * openers, errors
    with Store(path) as s:
        assert s.count_cdrs() == openers


def test_opening_waits_for_a_writer_that_holds_a_new_file(tmp_path: Path) -> None:
    # Another process writing to a file that is not in WAL mode yet (first boot): SQLite
    # refuses the switch to WAL at once, without its busy handler, so the store must wait
    # for the writer itself rather than fail with "database is locked".
    path = tmp_path / "warden.db"
    raw = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    raw.execute("CREATE TABLE other (x)")
    raw.execute("BEGIN IMMEDIATE")
    raw.execute("INSERT INTO other VALUES (1)")
    releaser = threading.Timer(0.5, raw.execute, ("COMMIT",))
    releaser.start()
    started = time.monotonic()
    try:
        with Store(path, busy_timeout=5.0) as s:
            waited = time.monotonic() - started
            assert s.count_cdrs() == 0
    finally:
        releaser.join()
        raw.close()
    assert 0.4 < waited < 5.0


def test_opening_gives_up_when_the_writer_outlasts_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "warden.db"
    raw = _raw(path)
    raw.execute("CREATE TABLE other (x)")
    raw.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    try:
        with pytest.raises(StoreError, match="database is locked"):
            Store(path, busy_timeout=0.3)
    finally:
        raw.close()
    assert 0.25 < time.monotonic() - started < 3.0


# --- the read cache ----------------------------------------------------------------------------


def _statements(store: Store) -> list[str]:
    seen: list[str] = []
    store._conn.set_trace_callback(lambda sql: seen.append(sql.split()[0].upper()))  # type: ignore[union-attr]
    return seen


def test_lookups_are_cached_and_our_own_writes_show_at_once(store: Store, db_path: Path) -> None:
    store.add_extension("1001", PASSWORD, realm=REALM)
    store.upsert_binding(_binding())
    seen = _statements(store)
    assert store.credentials("1001") is not None and store.bindings("1001", now=T0)
    assert seen == ["PRAGMA", "SELECT", "PRAGMA", "SELECT"]  # data_version, then the rows
    del seen[:]
    assert store.credentials("1001") is not None and store.get_extension("1001") is not None
    assert seen == ["PRAGMA", "PRAGMA"]  # no one else wrote: no SELECT
    del seen[:]
    with store.batch():
        cdr = store.start_cdr("c", "1001", "1002", T0, caller_transport="udp")
        store.credentials("1001"), store.get_extension("1001"), store.bindings("1001", now=T0)
        store.answer_cdr(cdr, T0 + 1)
        store.end_cdr(cdr, T0 + 2, "answered", None)
    # inside our own write transaction no one else can commit: the lookups cost nothing
    assert seen == ["BEGIN", "PRAGMA", "INSERT", "UPDATE", "UPDATE", "COMMIT"]

    store.set_password("1001", "another-password", realm=REALM)
    assert store.credentials("1001") == (ha1("1001", REALM, "another-password", "MD5"),
                                         ha1("1001", REALM, "another-password", "SHA-256"), REALM)
    store.update_extension("1001", enabled=False)
    assert store.credentials("1001") is None and not store.get_extension("1001").enabled  # type: ignore[union-attr]
    store.upsert_binding(_binding(contact="sip:1001@192.0.2.11:5060", q=0.5))
    assert [b.contact for b in store.bindings("1001", now=T0)] == ["sip:1001@192.0.2.10:5060",
                                                                    "sip:1001@192.0.2.11:5060"]
    assert store.bindings("1001", now=T0 + 3600) == []  # expiry is applied to cached rows too
    store.remove_binding("1001", "sip:1001@192.0.2.10:5060")
    assert [b.contact for b in store.bindings("1001")] == ["sip:1001@192.0.2.11:5060"]
    assert [b.contact for b in store.expire_bindings(T0 + 3600)] == ["sip:1001@192.0.2.11:5060"]
    assert store.bindings("1001") == []
    assert store.get_extension("1002") is None
    store.add_extension("1002", PASSWORD, realm=REALM)
    assert store.get_extension("1002") is not None  # a cached "no such extension" is forgotten too
    store.delete_extension("1002")
    assert store.get_extension("1002") is None


def test_a_rolled_back_write_leaves_nothing_cached(store: Store) -> None:
    store.add_extension("1001", PASSWORD, realm=REALM)
    store.upsert_binding(_binding())
    with store.batch():
        with pytest.raises(RuntimeError):
            with store._write():  # a block that fails is rolled back to its savepoint
                store.remove_bindings("1001")
                assert store.bindings("1001") == []  # our own uncommitted write, read and cached
                raise RuntimeError("boom")
        assert len(store.bindings("1001")) == 1  # what the cache says is what is stored
    assert len(store.bindings("1001")) == 1
    with pytest.raises(NoSuchExtension):
        store.upsert_binding(_binding(aor="1999"))
    assert store.get_extension("1999") is None

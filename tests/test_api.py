"""The admin API's logic through Flask's test client: auth, roles, problems, every resource.

A real store (SQLite file) and, where the PBX matters, a real control
socket served by a fake PBX (``test_api_support.FakePBX``). The same file
runs on Flask 3.x (the venv) and Flask 2.2 (Debian 12's ``python3``).
"""

from __future__ import annotations

import ast
import json
import logging
import re
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import helpers
from test_api_support import FakePBX, write_config

from warden import cli, config
from warden.api import MAX_BODY, _sockets, control_path, create_app
from warden.api._gunicorn import _SSLModuleShim, problem_bytes
from warden.api.auth import FailureThrottle, requires
from warden.api.openapi import document
from warden.api.validate import parse_time
from warden.errors import StoreError
from warden.sip.auth import ha1
from warden.store import Binding, Store, hash_token
from warden.tls import TLSManager

ROOT = helpers.ROOT
PASSWORD = "correct-horse-battery"


@pytest.fixture()
def cfg(tmp_path: Path, pki: helpers.PKI) -> config.Config:
    return config.load(write_config(tmp_path, pki), check_files=False)


@pytest.fixture()
def store(cfg: config.Config) -> Iterator[Store]:
    s = Store(cfg.store.path)
    yield s
    s.close()


@pytest.fixture()
def tokens(store: Store) -> dict[str, str]:
    return {role: store.create_token(f"test-{role}", role)[1] for role in ("admin", "viewer")}


@pytest.fixture()
def app(cfg: config.Config) -> Any:
    return create_app(cfg, auth_failure_limit=5)


@pytest.fixture()
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture()
def pbx(cfg: config.Config, pki: helpers.PKI) -> Iterator[FakePBX]:
    with FakePBX(control_path(cfg), pki) as fake:
        yield fake


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def problem(resp: Any, status: int) -> dict[str, Any]:
    """Assert ``resp`` is an RFC 9457 problem with ``status``; return it."""
    assert resp.status_code == status, resp.data
    assert resp.mimetype == "application/problem+json"
    body = json.loads(resp.data)
    assert body["status"] == status
    assert {"type", "title", "detail"} <= set(body)
    assert b"Traceback" not in resp.data and b"<html" not in resp.data.lower()
    return body


def invalid_fields(resp: Any) -> list[str]:
    return [p["name"] for p in problem(resp, 400)["invalid-params"]]


# --- health, documents, errors ----------------------------------------------------------------


def test_health_needs_no_token_and_says_whether_the_pbx_answers(client: Any, cfg: config.Config,
                                                                  pki: helpers.PKI) -> None:
    resp = client.get("/api/v1/health")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    assert resp.json == {"status": "ok", "pbx": "not running"}
    with FakePBX(control_path(cfg), pki):
        assert client.get("/api/v1/health").json == {"status": "ok", "pbx": "running"}


def test_control_path_is_beside_the_database(cfg: config.Config) -> None:
    assert control_path(cfg) == Path(cfg.store.path).parent / "warden.sock"
    try:
        from warden.control.location import control_path as pbx_side
    except ImportError:
        return
    assert pbx_side(cfg) == control_path(cfg)  # the PBX listens where the API calls


def test_every_route_is_in_the_openapi_document_and_back(app: Any, client: Any) -> None:
    doc = client.get("/api/v1/openapi.json").json
    assert doc == document() and doc["openapi"].startswith("3.0")
    served: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        served.setdefault(path, set()).update({m.lower() for m in rule.methods} - {"head", "options"})
    documented = {p: {m for m in ops if m != "parameters"} for p, ops in doc["paths"].items()}
    assert served == documented
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if method == "parameters":
                continue
            public = op.get("security") == []
            assert public == (path in ("/api/v1/health", "/api/v1/openapi.json")), path
            if not public:
                assert {"401", "429"} <= set(op["responses"]), (method, path)
            if "requestBody" in op:
                assert {"400", "413", "415"} <= set(op["responses"]), (method, path)


def test_unknown_path_and_method_are_problems(client: Any, tokens: dict[str, str]) -> None:
    problem(client.get("/api/v1/nowhere"), 404)
    problem(client.get("/"), 404)
    body = problem(client.put("/api/v1/extensions/1001", headers=auth(tokens["admin"])), 405)
    resp = client.put("/api/v1/extensions/1001")
    assert set(resp.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "PATCH", "DELETE"}
    assert "PUT" in body["detail"]


def test_an_unexpected_error_is_a_logged_generic_500(app: Any, tokens: dict[str, str],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    @requires("viewer")
    def boom() -> Any:
        raise RuntimeError("secret internals")

    app.add_url_rule("/api/v1/boom", "boom", boom)
    with caplog.at_level(logging.ERROR, logger="warden.api"):
        resp = app.test_client().get("/api/v1/boom", headers=auth(tokens["viewer"]))
    body = problem(resp, 500)
    assert b"secret internals" not in resp.data
    assert body["type"] == "urn:warden-pbx:problem:internal"
    assert any("GET /api/v1/boom" in r.getMessage() and r.exc_info for r in caplog.records)


# --- authentication and roles -----------------------------------------------------------------


def test_no_token_is_401_with_a_bearer_challenge(client: Any) -> None:
    for path in ("/api/v1/status", "/api/v1/extensions", "/api/v1/cdrs", "/api/v1/registrations"):
        resp = client.get(path)
        problem(resp, 401)
        assert resp.headers["WWW-Authenticate"].startswith('Bearer realm="warden"')


@pytest.mark.parametrize("header", [
    "Bearer wdn_" + "A" * 43, "Bearer nonsense", "Basic dXNlcjpwYXNz", "Bearer", "wdn_x",
])
def test_a_wrong_token_is_401_invalid_token(client: Any, header: str, tokens: dict[str, str]) -> None:
    resp = client.get("/api/v1/extensions", headers={"Authorization": header})
    problem(resp, 401)
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]


def test_viewer_reads_admin_writes(client: Any, tokens: dict[str, str]) -> None:
    viewer, admin = auth(tokens["viewer"]), auth(tokens["admin"])
    assert client.get("/api/v1/extensions", headers=viewer).status_code == 200
    body = {"number": "1001", "password": PASSWORD}
    problem(client.post("/api/v1/extensions", json=body, headers=viewer), 403)
    assert client.post("/api/v1/extensions", json=body, headers=admin).status_code == 201
    problem(client.patch("/api/v1/extensions/1001", json={"enabled": False}, headers=viewer), 403)
    problem(client.delete("/api/v1/extensions/1001", headers=viewer), 403)
    problem(client.post("/api/v1/config/reload", headers=viewer), 403)
    assert client.get("/api/v1/extensions/1001", headers=viewer).json["enabled"] is True


def test_a_revoked_token_stops_working(client: Any, store: Store, tokens: dict[str, str]) -> None:
    assert client.get("/api/v1/extensions", headers=auth(tokens["viewer"])).status_code == 200
    store.revoke_token("test-viewer")
    problem(client.get("/api/v1/extensions", headers=auth(tokens["viewer"])), 401)


def test_failed_attempts_are_throttled_per_address(client: Any, tokens: dict[str, str]) -> None:
    for _ in range(10):  # no Authorization header at all guesses nothing: not counted
        problem(client.get("/api/v1/extensions"), 401)
    for _ in range(5):
        problem(client.get("/api/v1/extensions", headers=auth("wdn_" + "B" * 43)), 401)
    resp = client.get("/api/v1/extensions", headers=auth("wdn_" + "B" * 43))
    problem(resp, 429)
    assert 55 <= int(resp.headers["Retry-After"]) <= 60
    # Even the right token waits: a throttled address must not learn which guess was right.
    problem(client.get("/api/v1/extensions", headers=auth(tokens["admin"])), 429)
    other = client.get("/api/v1/extensions", headers=auth(tokens["admin"]),
                       environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert other.status_code == 200
    assert client.get("/api/v1/health").status_code == 200  # public stays public


def test_failure_throttle_window_slides() -> None:
    throttle = FailureThrottle(limit=3, window=60.0)
    for t in (0.0, 10.0, 20.0):
        assert throttle.retry_after("a", t) is None
        throttle.failure("a", t)
    assert throttle.retry_after("a", 30.0) == pytest.approx(30.0)
    assert throttle.retry_after("b", 30.0) is None
    assert throttle.retry_after("a", 60.5) is None  # the first failure left the window
    small = FailureThrottle(limit=1, window=60.0, max_keys=2)
    for key in ("x", "y", "z"):
        small.failure(key, 0.0)
    assert small.retry_after("x", 1.0) is None and small.retry_after("z", 1.0) is not None


def test_tokens_never_reach_the_log(client: Any, tokens: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client.get("/api/v1/extensions", headers=auth(tokens["admin"]))
    client.get("/api/v1/extensions", headers=auth(tokens["admin"][:-1] + "x"))
    client.post("/api/v1/extensions", json={"number": "1001", "password": PASSWORD}, headers=auth(tokens["viewer"]))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "authentication failed" in text
    for secret in (*tokens.values(), tokens["admin"][:-1] + "x", PASSWORD):
        assert secret not in text


# --- extensions -------------------------------------------------------------------------------


def test_create_stores_ha1_only_and_never_returns_the_password(
    client: Any, store: Store, cfg: config.Config, tokens: dict[str, str]
) -> None:
    resp = client.post("/api/v1/extensions", headers=auth(tokens["admin"]),
                       json={"number": "1001", "password": PASSWORD, "display_name": "Alice"})
    assert resp.status_code == 201
    assert resp.headers["Location"].endswith("/api/v1/extensions/1001")
    body = resp.json
    assert body["number"] == "1001" and body["display_name"] == "Alice" and body["enabled"] is True
    assert body["realm"] == cfg.sip.realm and body["contacts"] == 0
    assert not {"password", "ha1_md5", "ha1_sha256"} & set(body)
    ext = store.get_extension("1001")
    assert ext is not None
    assert ext.ha1_md5 == ha1("1001", cfg.sip.realm, PASSWORD, "MD5")
    assert ext.ha1_sha256 == ha1("1001", cfg.sip.realm, PASSWORD, "SHA-256")
    with sqlite3.connect(cfg.store.path) as raw:
        dump = "\n".join(raw.iterdump())
    assert PASSWORD not in dump
    listed = client.get("/api/v1/extensions", headers=auth(tokens["viewer"])).json
    assert listed["total"] == 1 and "password" not in json.dumps(listed)


def test_duplicate_extension_is_409(client: Any, tokens: dict[str, str]) -> None:
    body = {"number": "1001", "password": PASSWORD}
    assert client.post("/api/v1/extensions", json=body, headers=auth(tokens["admin"])).status_code == 201
    problem(client.post("/api/v1/extensions", json=body, headers=auth(tokens["admin"])), 409)


@pytest.mark.parametrize(("body", "field"), [
    ({"password": PASSWORD}, "number"),
    ({"number": "1001"}, "password"),
    ({"number": "10 01", "password": PASSWORD}, "number"),
    ({"number": "..", "password": PASSWORD}, "number"),
    ({"number": 1001, "password": PASSWORD}, "number"),
    ({"number": "x" * 33, "password": PASSWORD}, "number"),
    ({"number": "1001", "password": "short"}, "password"),
    ({"number": "1001", "password": "p" * 257}, "password"),
    ({"number": "1001", "password": "tab\there-ok?"}, "password"),
    ({"number": "1001", "password": PASSWORD, "display_name": "A\nB"}, "display_name"),
    ({"number": "1001", "password": PASSWORD, "display_name": "x" * 129}, "display_name"),
    ({"number": "1001", "password": PASSWORD, "enabled": "yes"}, "enabled"),
    ({"number": "1001", "password": PASSWORD, "enabled": 1}, "enabled"),
    ({"number": "1001", "password": PASSWORD, "ha1_md5": "00"}, "ha1_md5"),
])
def test_bad_extension_fields_are_400_naming_the_field(client: Any, tokens: dict[str, str],
                                                       body: dict[str, Any], field: str) -> None:
    resp = client.post("/api/v1/extensions", json=body, headers=auth(tokens["admin"]))
    assert invalid_fields(resp) == [field]


@pytest.mark.parametrize("data", [b"{", b"[1, 2]", b"", b"\xff\xfe", b'{"number": NaN}', b"null"])
def test_bad_json_bodies_are_400_naming_the_body(client: Any, tokens: dict[str, str], data: bytes) -> None:
    resp = client.post("/api/v1/extensions", data=data, content_type="application/json",
                       headers=auth(tokens["admin"]))
    assert invalid_fields(resp) == ["body"]


def test_non_json_body_is_415_and_a_big_one_413(client: Any, tokens: dict[str, str]) -> None:
    admin = auth(tokens["admin"])
    problem(client.post("/api/v1/extensions", data="number=1001", headers=admin,
                        content_type="application/x-www-form-urlencoded"), 415)
    problem(client.post("/api/v1/extensions", data="{}", headers=admin), 415)
    problem(client.patch("/api/v1/extensions/1001", data="x", content_type="text/plain", headers=admin), 415)
    problem(client.post("/api/v1/config/reload", data="x", content_type="text/plain", headers=admin), 415)
    big = json.dumps({"number": "1001", "password": PASSWORD, "display_name": "x" * MAX_BODY})
    problem(client.post("/api/v1/extensions", data=big, content_type="application/json", headers=admin), 413)
    # application/*+json is JSON too
    resp = client.post("/api/v1/extensions", data=json.dumps({"number": "1002", "password": PASSWORD}),
                       content_type="application/merge-patch+json", headers=admin)
    assert resp.status_code == 201


def test_unauthenticated_requests_get_401_before_any_body_check(client: Any) -> None:
    problem(client.post("/api/v1/extensions", data="x" * (MAX_BODY + 10), content_type="text/plain"), 401)


def test_read_change_and_delete_an_extension(client: Any, store: Store, cfg: config.Config,
                                             tokens: dict[str, str]) -> None:
    admin, viewer = auth(tokens["admin"]), auth(tokens["viewer"])
    client.post("/api/v1/extensions", json={"number": "1001", "password": PASSWORD}, headers=admin)
    problem(client.get("/api/v1/extensions/1002", headers=viewer), 404)
    problem(client.patch("/api/v1/extensions/1002", json={"enabled": False}, headers=admin), 404)
    resp = client.patch("/api/v1/extensions/1001", headers=admin,
                        json={"display_name": "Alice", "enabled": False, "password": "new-password-1"})
    assert resp.status_code == 200
    assert resp.json["display_name"] == "Alice" and resp.json["enabled"] is False
    ext = store.get_extension("1001")
    assert ext is not None and ext.ha1_md5 == ha1("1001", cfg.sip.realm, "new-password-1", "MD5")
    assert invalid_fields(client.patch("/api/v1/extensions/1001", json={"number": "1"}, headers=admin)) == ["number"]
    assert client.patch("/api/v1/extensions/1001", json={}, headers=admin).status_code == 200
    assert client.get("/api/v1/extensions/1001", headers=viewer).json["display_name"] == "Alice"
    resp = client.delete("/api/v1/extensions/1001", headers=admin)
    assert resp.status_code == 204 and resp.data == b""
    problem(client.delete("/api/v1/extensions/1001", headers=admin), 404)
    assert store.get_extension("1001") is None


# --- registrations, calls, status, TLS stats, reload ---------------------------------------------


def _binding(aor: str, now: float) -> Binding:
    return Binding(aor=aor, contact=f"sips:{aor}@192.0.2.10:5061", expires_at=now + 120, call_id="r", cseq=1,
                   transport="tls", source_host="192.0.2.10", source_port=50000, user_agent="Phone/1.0",
                   tls_version="TLSv1.3", tls_cipher="TLS_AES_128_GCM_SHA256", registered_at=now)


def test_registrations_come_from_the_store_when_the_pbx_is_down(client: Any, store: Store,
                                                                 tokens: dict[str, str]) -> None:
    now = time.time()
    for number in ("1001", "1002"):
        store.add_extension(number, PASSWORD, realm="warden")
        store.upsert_binding(_binding(number, now))
    body = client.get("/api/v1/registrations", headers=auth(tokens["viewer"])).json
    assert body["source"] == "store" and body["total"] == 2
    item = body["items"][0]
    assert item["contact"] == "sips:1001@192.0.2.10:5061" and item["source"] == "192.0.2.10:50000"
    assert item["transport"] == "tls" and item["tls_version"] == "TLSv1.3"
    assert item["tls_cipher"] == "TLS_AES_128_GCM_SHA256" and item["user_agent"] == "Phone/1.0"
    assert 100 <= item["expires_in"] <= 120
    one = client.get("/api/v1/registrations?aor=1002", headers=auth(tokens["viewer"])).json
    assert [i["aor"] for i in one["items"]] == ["1002"]


def test_registrations_calls_and_tls_stats_come_from_the_pbx(client: Any, pbx: FakePBX,
                                                             tokens: dict[str, str]) -> None:
    viewer = auth(tokens["viewer"])
    body = client.get("/api/v1/registrations?aor=1001", headers=viewer).json
    assert body["source"] == "pbx" and body["items"][0]["user_agent"] == "Yealink T54W"
    assert body["items"][0]["source"] == "192.0.2.10:50412" and body["items"][0]["expires_in"] == 300
    assert ("registrations.list", {"aor": "1001"}) in pbx.calls
    calls = client.get("/api/v1/calls", headers=viewer).json
    assert calls["total"] == 1 and calls["items"][0]["legs"][0]["side"] == "a"
    stats = client.get("/api/v1/tls/stats", headers=viewer).json
    assert stats["listeners"]["sips"]["handshakes"][0]["version"] == "TLSv1.3"


def test_calls_tls_stats_and_reload_are_503_without_the_pbx(client: Any, tokens: dict[str, str]) -> None:
    for method, path in (("get", "/api/v1/calls"), ("get", "/api/v1/tls/stats"), ("post", "/api/v1/config/reload")):
        resp = getattr(client, method)(path, headers=auth(tokens["admin"]))
        body = problem(resp, 503)
        assert body["type"] == "urn:warden-pbx:problem:pbx-unavailable"
        assert resp.headers["Retry-After"] == "5"


def test_bans_are_listed_for_viewers_and_lifted_by_admins(client: Any, pbx: FakePBX,
                                                          tokens: dict[str, str]) -> None:
    viewer, admin = auth(tokens["viewer"]), auth(tokens["admin"])
    body = client.get("/api/v1/bans", headers=viewer).json
    assert body["total"] == 1 and body["items"][0]["address"] == "203.0.113.7"
    assert body["items"][0]["expires_in"] == 570 and body["items"][0]["dropped"] == 42
    problem(client.delete("/api/v1/bans/203.0.113.7", headers=viewer), 403)
    problem(client.delete("/api/v1/bans/198.51.100.1", headers=admin), 404)
    problem(client.delete("/api/v1/bans/not-an-address", headers=admin), 404)
    resp = client.delete("/api/v1/bans/[203.0.113.7]", headers=admin)  # brackets and all
    assert resp.status_code == 204 and resp.data == b""
    assert ("bans.lift", {"address": "203.0.113.7"}) in pbx.calls
    assert client.get("/api/v1/bans", headers=viewer).json == {"items": [], "total": 0}
    problem(client.delete("/api/v1/bans/203.0.113.7", headers=admin), 404)
    pbx.bans.add("2001:db8:1:2::/64")
    assert client.delete("/api/v1/bans/2001:db8:1:2::/64", headers=admin).status_code == 204
    assert ("bans.lift", {"address": "2001:db8:1:2::/64"}) in pbx.calls
    pbx.op_bans_list = lambda args: [{"address": "203.0.113.7"}]  # type: ignore[method-assign]
    problem(client.get("/api/v1/bans", headers=viewer), 502)


def test_bans_are_503_without_the_pbx(client: Any, tokens: dict[str, str]) -> None:
    problem(client.get("/api/v1/bans", headers=auth(tokens["viewer"])), 503)
    problem(client.delete("/api/v1/bans/203.0.113.7", headers=auth(tokens["admin"])), 503)


def test_reload_asks_the_pbx(client: Any, pbx: FakePBX, tokens: dict[str, str]) -> None:
    resp = client.post("/api/v1/config/reload", headers=auth(tokens["admin"]))
    assert resp.status_code == 200 and resp.json["reloaded"] is True
    assert [op for op, _ in pbx.calls] == ["reload"]
    resp = client.post("/api/v1/config/reload", json={}, headers=auth(tokens["admin"]))
    assert resp.status_code == 200


def test_a_malformed_pbx_answer_is_502(client: Any, pbx: FakePBX, tokens: dict[str, str]) -> None:
    pbx.op_calls_list = lambda args: {"not": "a list"}  # type: ignore[method-assign]
    body = problem(client.get("/api/v1/calls", headers=auth(tokens["viewer"])), 502)
    assert "calls.list" in body["detail"]


def test_status_from_the_api_alone(client: Any, cfg: config.Config, pki: helpers.PKI,
                                   tokens: dict[str, str]) -> None:
    body = client.get("/api/v1/status", headers=auth(tokens["viewer"])).json
    assert body["pbx"] == "not running" and body["uptime"] is None
    assert body["listeners"] == [{"transport": "https", "address": "127.0.0.1", "port": cfg.api.port}]
    assert body["tls"]["minimum_version"] == "TLSv1.2" and body["tls"]["policy"] == "intermediate"
    assert body["certificate"]["subject"] == "CN=localhost"
    assert set(body["certificate"]["sans"]) >= {"localhost", "127.0.0.1"}
    assert body["certificate"]["expires_in_days"] > 800
    assert body["api"]["tls"]["certificate"]["file"] == str(pki.cert)


def test_status_from_the_pbx(client: Any, pbx: FakePBX, tokens: dict[str, str]) -> None:
    body = client.get("/api/v1/status", headers=auth(tokens["viewer"])).json
    assert body["pbx"] == "running" and body["version"] == "9.9.9-fake" and body["uptime"] == 12.5
    assert {"transport": "tls", "address": "127.0.0.1", "port": 5061} in body["listeners"]
    assert body["listeners"][-1]["transport"] == "https"
    assert body["tls"] == pbx.tls_report
    assert body["certificate"]["subject"] == pbx.tls_report["certificate"]["subject"]


def test_fips_mode_shows_in_status(tmp_path: Path, pki: helpers.PKI) -> None:
    cfg = config.load(write_config(tmp_path, pki, fips=True), check_files=False)
    with Store(cfg.store.path) as s:
        _, token = s.create_token("v", "viewer")
    app = create_app(cfg)  # Flask 2.2's response.json needs the app alive
    body = app.test_client().get("/api/v1/status", headers=auth(token)).json
    assert body["tls"]["fips_mode"] is True
    assert "TLS_CHACHA20_POLY1305_SHA256" not in body["tls"]["tls13_suites"]


# --- CDRs -------------------------------------------------------------------------------------


T0 = 1_714_564_800.0  # 2024-05-01T12:00:00Z


@pytest.fixture()
def cdrs(store: Store) -> None:
    for i in range(25):
        cid = store.start_cdr(f"call-{i}", "1001" if i % 2 else "1002", "1003", T0 + i * 60,
                              caller_transport="tls", caller_tls_version="TLSv1.3")
        if i % 3 == 0:
            store.answer_cdr(cid, T0 + i * 60 + 5, callee_contact="sip:1003@192.0.2.1", callee_transport="udp")
            store.end_cdr(cid, T0 + i * 60 + 65, "answered", "caller hung up")
        else:
            store.end_cdr(cid, T0 + i * 60 + 20, "no_answer", "480")


def test_cdrs_paginate_with_total_and_next(client: Any, cdrs: None, tokens: dict[str, str]) -> None:
    viewer = auth(tokens["viewer"])
    page = client.get("/api/v1/cdrs?limit=10", headers=viewer).json
    assert page["total"] == 25 and page["limit"] == 10 and page["offset"] == 0 and len(page["items"]) == 10
    assert page["items"][0]["call_id"] == "call-24"  # newest first
    seen = [c["id"] for c in page["items"]]
    while page["next"]:
        page = client.get(page["next"], headers=viewer).json
        seen += [c["id"] for c in page["items"]]
    assert len(seen) == len(set(seen)) == 25 and page["offset"] == 20
    assert client.get("/api/v1/cdrs?offset=100", headers=viewer).json["items"] == []


def test_cdr_filters(client: Any, cdrs: None, tokens: dict[str, str]) -> None:
    viewer = auth(tokens["viewer"])

    def total(query: str) -> int:
        resp = client.get(f"/api/v1/cdrs?{query}", headers=viewer)
        assert resp.status_code == 200, resp.json
        return int(resp.json["total"])

    assert total("caller=1001") == 12 and total("caller=1002") == 13 and total("callee=1003") == 25
    assert total("disposition=answered") == 9 and total("disposition=no_answer") == 16
    assert total("since=2024-05-01T12:10:00Z") == 15
    assert total(f"since={T0 + 600:.0f}") == 15
    assert total("since=2024-05-01T14:10:00%2B02:00") == 15
    assert total("until=2024-05-01T12:10:00") == 10  # no offset: UTC
    assert total("since=2024-05-01T12:10:00Z&until=2024-05-01T12:20:00Z&caller=1001&disposition=no_answer") == 4
    nxt = client.get("/api/v1/cdrs?caller=1002&limit=5", headers=viewer).json["next"]
    assert "caller=1002" in nxt and "offset=5" in nxt


@pytest.mark.parametrize(("query", "field"), [
    ("limit=0", "limit"), ("limit=1001", "limit"), ("limit=ten", "limit"), ("offset=-1", "offset"),
    ("since=yesterday", "since"), ("until=2024-13-01T00:00:00Z", "until"), ("since=1e999", "since"),
    ("disposition=lost", "disposition"), ("caller=" + "9" * 129, "caller"),
])
def test_bad_cdr_queries_are_400_naming_the_parameter(client: Any, tokens: dict[str, str],
                                                      query: str, field: str) -> None:
    assert invalid_fields(client.get(f"/api/v1/cdrs?{query}", headers=auth(tokens["viewer"]))) == [field]


@pytest.mark.parametrize(("text", "epoch"), [
    ("2024-05-01T12:00:00Z", T0), ("2024-05-01t12:00:00z", T0), ("2024-05-01T12:00:00.5Z", T0 + 0.5),
    ("2024-05-01T14:00:00+02:00", T0), ("2024-05-01 12:00:00", T0), ("2024-05-01", T0 - 12 * 3600),
    ("2016-12-31T23:59:60Z", 1483228800.0), (f"{T0}", T0), ("-1.5", -1.5),
    ("2024-05-01T12:00:00.123456789Z", T0 + 0.123456789),
])
def test_time_parameters(text: str, epoch: float) -> None:
    assert parse_time("since", text) == pytest.approx(epoch)


# --- tokens in the store and on the command line ------------------------------------------------


def test_tokens_are_stored_as_sha256_only(store: Store, cfg: config.Config) -> None:
    token, secret = store.create_token("ci-bot", "admin")
    assert secret.startswith("wdn_") and len(secret) == 47
    with sqlite3.connect(cfg.store.path) as raw:
        rows = raw.execute("SELECT token_sha256 FROM api_tokens").fetchall()
        dump = "\n".join(raw.iterdump())
    assert rows == [(hash_token(secret),)] and secret not in dump
    assert store.verify_token(secret) == token
    used = store.list_tokens()[0].last_used_at
    assert used is not None and time.time() - used < 5
    assert store.verify_token(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    with pytest.raises(StoreError) as exc:
        store.create_token("ci-bot", "viewer")
    assert exc.value.status == 409
    store.revoke_token(str(token.id))
    assert store.verify_token(secret) is None
    store.create_token("ci-bot", "viewer")  # a revoked token's name is free again
    with pytest.raises(StoreError):
        store.create_token("ci-bot", "root")
    with pytest.raises(StoreError):
        store.create_token("9lives", "admin")


def test_cli_prints_the_token_alone_on_the_last_line(cfg: config.Config, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--config", cfg.source]
    assert cli.main([*base, "api", "token", "create", "--name", "ops", "--role", "admin"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    secret = out[-1]
    assert secret.startswith("wdn_") and secret.strip() == secret and len(secret) == 47
    with Store(cfg.store.path) as s:
        token = s.verify_token(secret)
        assert token is not None and token.role == "admin" and token.name == "ops"
    assert cli.main([*base, "api", "token", "create", "--name", "dash", "--role", "viewer", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().startswith("wdn_") and len(captured.out.strip().splitlines()) == 1
    assert cli.main([*base, "api", "token", "list"]) == 0
    listing = capsys.readouterr().out
    assert "ops" in listing and "dash" in listing and "viewer" in listing and secret not in listing
    assert cli.main([*base, "api", "token", "revoke", "ops"]) == 0
    assert "revoked" in capsys.readouterr().out
    assert cli.main([*base, "api", "token", "revoke", "ops"]) == 2
    assert "no active API token" in capsys.readouterr().err
    assert cli.main([*base, "api", "token", "list", "--all", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["revoked"]) for r in rows] == [("ops", True), ("dash", False)]


# --- layering -----------------------------------------------------------------------------------


def test_the_api_never_imports_sip_transport_media_or_the_extension() -> None:
    forbidden = ("warden.sip", "warden.transport", "warden.media", "warden_ext", "warden.engine", "warden.core")
    for path in sorted((ROOT / "warden" / "api").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(forbidden), f"{path.name} imports {name}"
    code = ("import sys, warden.api.app, warden.api.openapi; "
            "bad = [m for m in sys.modules if m.startswith(('warden.transport', 'warden.media', 'warden_ext'))]; "
            "print(bad); sys.exit(1 if bad else 0)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr


# --- gunicorn glue, without gunicorn ---------------------------------------------------------------


@pytest.fixture()
def guarded(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    monkeypatch.setattr(_sockets, "REQUEST_TIMEOUT", 0.3)
    monkeypatch.setattr(_sockets, "PICKUP_GRACE", 0.2)
    ours, peer = socket.socketpair()
    sock = _sockets.GuardedSocket(ours.family, ours.type, ours.proto, fileno=ours.detach())
    sock._warden_arm()
    yield sock, peer
    sock.close()
    peer.close()


def test_a_connection_gets_until_its_deadline_then_eof(guarded: tuple[Any, Any],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    sock, peer = guarded
    peer.sendall(b"GET / HT")
    assert sock.recv(100) == b"GET / HT"
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="warden.api.sockets"):
        assert sock.recv(100) == b""  # nothing more came: cut at the deadline, as end-of-file
    assert 0.1 < time.monotonic() - started < 1.0
    assert sock.gettimeout() is None  # the caller's blocking mode is left as it was
    assert "request not complete within" in caplog.text
    peer.sendall(b"TP/1.1\r\n")
    assert sock.recv(100) == b""  # once cut, always end-of-file


def test_a_connection_picked_up_late_still_reads_what_it_sent(guarded: tuple[Any, Any]) -> None:
    sock, peer = guarded
    peer.sendall(b"GET / HTTP/1.1\r\n\r\n")
    time.sleep(0.4)  # queued behind slow clients past its deadline
    assert sock.recv(100) == b"GET / HTTP/1.1\r\n\r\n"
    sock.sendall(b"HTTP/1.1 200 OK\r\n\r\n")  # a response re-arms the deadline
    assert peer.recv(100).startswith(b"HTTP/1.1 200")
    peer.sendall(b"next")
    assert sock.recv(100) == b"next"


def test_the_callers_own_timeouts_still_apply(guarded: tuple[Any, Any]) -> None:
    sock, _peer = guarded
    sock.settimeout(0.05)
    with pytest.raises(TimeoutError):
        sock.recv(10)
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(10)


def test_the_gunicorn20_shim_wraps_with_our_context(pki: helpers.PKI) -> None:
    manager = TLSManager(pki.cert, pki.key, fips_mode=True)
    shim = _SSLModuleShim(lambda: _sockets.guard_context(manager.server_context()))
    assert shim.SSLError is ssl.SSLError and shim.SSL_ERROR_EOF == ssl.SSL_ERROR_EOF
    a, b = socket.socketpair()
    wrapped = shim.wrap_socket(a, server_side=True, certfile="ignored", ssl_version=2, ciphers="ALL")
    try:
        assert isinstance(wrapped, _sockets.GuardedSSLSocket) and wrapped.context is manager.server_context()
    finally:
        wrapped.close()
        b.close()
    raw = problem_bytes(414, "Request-URI Too Long", "line too long")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 414 ") and b"Content-Type: application/problem+json" in head
    assert json.loads(body) == {"type": "about:blank", "title": "Request-URI Too Long", "status": 414,
                                "detail": "line too long"}

"""SIGHUP re-reads the config: live settings change without dropping
connections; a broken config is refused and the running one stays."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from helpers import PKI, free_port
from phones import TLSPhone, UDPPhone

from warden.store import Store


def config(pki: PKI, tmp: Path, udp: int, tls: int, require_tls: bool) -> str:
    return f"""
sip: {{listen: [127.0.0.1], udp_port: {udp}, tcp_port: 0, tls_port: {tls}}}
api: {{enabled: false, bind: 127.0.0.1, ssl: {{enabled: true, cert_file: {pki.cert}, key_file: {pki.key}}}}}
security: {{tls_cert_file: {pki.cert}, tls_key_file: {pki.key}, tls_ca_file: {pki.ca}, require_tls: {str(require_tls).lower()}}}
store: {{path: {tmp}/var/warden.db}}
logging: {{level: info, file: ""}}
"""


def hup_and_wait(pbx: Any, marker: str, timeout: float = 10) -> None:
    seen = pbx.output().count(marker)
    assert pbx.proc is not None
    pbx.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while pbx.output().count(marker) <= seen:
        assert time.monotonic() < deadline, f"no {marker!r} after SIGHUP:\n{pbx.output()[-2000:]}"
        time.sleep(0.1)


def test_sighup_applies_require_tls_and_refuses_a_broken_config(pki: PKI, pbx_factory: Any, tmp_path: Path) -> None:
    udp, tls = free_port(), free_port()
    store = Store(tmp_path / "var" / "warden.db")
    store.add_extension("1001", "secret-1001", realm="warden")
    store.close()
    pbx = pbx_factory(config(pki, tmp_path, udp, tls, False), [("127.0.0.1", tls)])
    tls_phone = TLSPhone(("127.0.0.1", tls), pki.ca, "1001", "secret-1001")
    udp_phone = UDPPhone(("127.0.0.1", udp), "1001", "secret-1001")
    try:
        assert tls_phone.register().status == 200
        assert udp_phone.register().status == 200

        pbx.config.write_text(config(pki, tmp_path, udp, tls, True))
        hup_and_wait(pbx, "configuration reloaded")
        assert udp_phone.register().status == 403  # REGISTER over UDP now refused
        assert tls_phone.register().status == 200  # and the TLS phone's connection lived through it

        pbx.config.write_text("security:\n  require_tls: maybe\n")
        hup_and_wait(pbx, "reload refused")
        assert "security.require_tls must be true or false" in pbx.output()
        assert udp_phone.register().status == 403  # the running settings stayed
        assert tls_phone.register().status == 200

        pbx.config.write_text(config(pki, tmp_path, udp + 1 if udp < 32000 else udp - 1, tls, False))
        hup_and_wait(pbx, "configuration reloaded")
        assert "sip listeners changed; that takes a restart" in pbx.output()
        assert udp_phone.register().status == 200  # require_tls off again; the old UDP port still serves
    finally:
        tls_phone.close()
        udp_phone.close()

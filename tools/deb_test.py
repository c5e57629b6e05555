#!/usr/bin/python3
"""Build the warden-pbx .deb and prove it the way a user would (``make test-deb``).

1. Build: copy the checkout's files (tracked, plus untracked ones git does
   not ignore) to a scratch folder and run ``dpkg-buildpackage -us -uc -b``
   with Debian's interpreter; ``lintian`` must report no error or warning.
2. Boot: a debootstrapped Debian 12 tree, cached in ``$WARDEN_DEB_CACHE``
   (default /var/cache/warden-deb-test; made once, about a minute), is
   booted under ``systemd-nspawn`` on a throw-away overlay. The container
   shares the host's network, so after installation Warden is moved to ports
   61060/61061/61062 (above the ephemeral range), or other free ones when
   something on the host holds those (and when the packaged 5060/5061/9000 are taken on the host,
   policy-rc.d keeps postinst from starting it there).
3. Inside it: ``apt install ./warden-pbx_*.deb`` pulls the dependencies from
   the Debian archive; postinst made the user, directories, certificates and
   admin token with the right owners and modes, and started the service;
   ``systemd-analyze verify`` is clean and ``systemd-analyze security`` rates
   the unit 3.0 or lower; ``openssl s_client -tls1_3`` gets TLS 1.3 from SIPS
   and the API, verified with the generated CA; a phone registers over TLS
   with digest auth; the admin token works on the API; ``systemctl reload``
   refuses a key the service cannot read and then serves a new certificate
   on both ports without a restart; a killed PBX is restarted
   (Restart=on-failure); ``systemctl restart`` keeps registrations; an
   upgrade keeps certificates, token, the edited config and data; the Python
   suite passes against the installed package (debian/tests/run-suite
   hermetic); ``apt remove`` stops it and keeps config and data; ``apt
   purge`` leaves nothing behind.

Every step is bounded in time, and the container is always stopped and its
overlay removed, also on Ctrl-C. Logs: $WARDEN_DEB_WORK (default
/tmp/warden-deb-test): deb-test.log, console.log, the .deb.

Options: --keep-going-on-lintian, --no-suite (skip the in-container test
suite), --peers (also run the sipp/baresip part of it), --check (build with
the build-time tests instead of nocheck).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("WARDEN_DEB_CACHE", "/var/cache/warden-deb-test"))
WORK = Path(os.environ.get("WARDEN_DEB_WORK", "/tmp/warden-deb-test"))
SUITE = "bookworm"
BASE_PACKAGES = "systemd,systemd-sysv,dbus,ca-certificates,man-db"
CLEAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# Ports for the container's Warden: these when free on the host, else others (see pick_ports).
PORTS = {"sip": 61060, "sips": 61061, "api": 61062}
DEFAULT_PORTS = (("tcp", 5060), ("udp", 5060), ("tcp", 5061), ("tcp", 9000))
EXT, EXT_PASSWORD = "1001", "deb-test-" + secrets.token_hex(6)
DEPENDENCIES = ("python3-flask", "python3-gunicorn", "python3-cryptography", "python3-yaml")

START = time.monotonic()
_log_file = None


class Failed(Exception):
    """A check failed; the message says which and why."""


def log(message: str) -> None:
    line = f"[{time.monotonic() - START:6.1f}s] {message}"
    print(line, flush=True)
    if _log_file is not None:
        _log_file.write(line + "\n")
        _log_file.flush()


def detail(text: str) -> None:
    """Command output: into the log file only (printed on failure)."""
    if _log_file is not None and text:
        _log_file.write(text if text.endswith("\n") else text + "\n")
        _log_file.flush()


TIMINGS: list[tuple[str, float]] = []


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    log(f"--- {name}")
    began = time.monotonic()
    yield
    took = time.monotonic() - began
    TIMINGS.append((name, took))
    log(f"ok  {name} ({took:.1f} s)")


def run(cmd: Sequence[str], *, timeout: float, check: bool = True, env: dict[str, str] | None = None,
        cwd: Path | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a host command, bounded; its output goes to the log file."""
    detail(f"$ {' '.join(cmd)}")
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd,
                              input=input if input is not None else "")
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        detail(out)
        raise Failed(f"{cmd[0]} did not finish within {timeout:g} s") from None
    detail(proc.stdout + proc.stderr)
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise Failed(f"{' '.join(cmd[:4])} ... exited with {proc.returncode}:\n{tail}")
    return proc


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise Failed(message)


# --- 1. build -----------------------------------------------------------------------------------------


def source_files() -> list[str]:
    """What a fresh clone plus this checkout's new files would hold."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
    return sorted({p for p in out.decode().split("\0") if p and os.path.lexists(ROOT / p)})


def build(check: bool) -> tuple[Path, Path, Path]:
    """The .deb (copied to WORK), its .changes and the source tree it was built from."""
    version = run(["dpkg-parsechangelog", "-l", str(ROOT / "debian/changelog"), "-S", "Version"],
                  timeout=30).stdout.strip()
    build_root = WORK / "build"
    shutil.rmtree(build_root, ignore_errors=True)
    for old in WORK.glob("*.deb"):
        old.unlink()
    tree = build_root / f"warden-pbx-{version}"
    for rel in source_files():
        src, dst = ROOT / rel, tree / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst)
    env = {"PATH": CLEAN_PATH, "HOME": str(build_root), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    cmd = ["dpkg-buildpackage", "-us", "-uc", "-b"]
    if not check:
        env["DEB_BUILD_OPTIONS"] = "nocheck"
        cmd.append("-Pnocheck")
    run(cmd, timeout=1200 if check else 600, env=env, cwd=tree)
    arch = run(["dpkg", "--print-architecture"], timeout=10).stdout.strip()
    deb = build_root / f"warden-pbx_{version}_{arch}.deb"
    changes = build_root / f"warden-pbx_{version}_{arch}.changes"
    expect(deb.is_file() and changes.is_file(), f"dpkg-buildpackage made no {deb.name}")
    shutil.copy2(deb, WORK / deb.name)
    log(f"built {deb.name} ({deb.stat().st_size // 1024} KiB)")
    return WORK / deb.name, changes, tree


def run_lintian(changes: Path, strict: bool) -> None:
    proc = run(["lintian", "--fail-on", "error,warning", "--info", "--display-level", ">=warning",
                str(changes)], timeout=300, check=False, env={"PATH": CLEAN_PATH, "LANG": "C.UTF-8"})
    tags = [line for line in (proc.stdout + proc.stderr).splitlines() if re.match(r"^[EW]: ", line)]
    for line in tags:
        log(f"lintian: {line}")
    if proc.returncode != 0 or tags:
        if strict:
            raise Failed(f"lintian reported {len(tags)} error/warning tag(s)")
        log("lintian failed; continuing (--keep-going-on-lintian)")
    else:
        log("lintian: no errors, no warnings")


# --- 2. the Debian 12 tree and the container ---------------------------------------------------------


def host_mirror_sources() -> Path | None:
    """The host's deb822 Debian sources, so the container uses the same mirror."""
    path = Path("/etc/apt/sources.list.d/debian.sources")
    return path if path.is_file() else None


def host_mirror() -> str:
    for path in [host_mirror_sources(), Path("/etc/apt/sources.list")]:
        if path is None or not path.is_file():
            continue
        for line in path.read_text().splitlines():
            m = re.match(r"^\s*(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+/debian)/?\s*", line)
            if m:
                return m.group(1)
    return "http://deb.debian.org/debian"


def base_tree() -> Path:
    """The cached debootstrapped tree, made when missing (never modified afterwards)."""
    tree = CACHE / SUITE
    stamp = tree / ".warden-deb-test-complete"
    if stamp.is_file():
        log(f"using the cached {SUITE} tree {tree}")
        return tree
    mirror = host_mirror()
    fresh = CACHE / f"{SUITE}.new"
    shutil.rmtree(fresh, ignore_errors=True)
    shutil.rmtree(tree, ignore_errors=True)
    log(f"debootstrapping {SUITE} from {mirror} into {tree} (once; about a minute)")
    run(["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", SUITE, str(fresh), mirror],
        timeout=900, env={"PATH": CLEAN_PATH, "LANG": "C.UTF-8"})
    sources = host_mirror_sources()
    if sources is not None:  # the same suites (updates, security) as the host, and no duplicate
        shutil.copy2(sources, fresh / "etc/apt/sources.list.d/debian.sources")
        (fresh / "etc/apt/sources.list").unlink(missing_ok=True)
    (fresh / "etc/hostname").write_text("warden-deb-test\n")
    (fresh / stamp.name).write_text(f"{SUITE} from {mirror}, {time.ctime()}\n")
    os.rename(fresh, tree)  # only a complete tree ever carries the final name
    return tree


def port_in_use(proto: str, port: int) -> bool:
    """Whether Warden could not bind ``port`` on 0.0.0.0 and :: (the packaged ``sip.listen``)."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        with socket.socket(family, kind) as s:
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s.bind((host, port))
            except OSError:
                return True
    return False


def pick_ports() -> None:
    """Fill PORTS with ports free on the host (the container shares its network).

    Above the kernel's ephemeral range when there is room (neither outgoing
    connections nor the test suite's free_port(), which stays below it, take
    ports there), else just below it; the preferred block first, then random
    ones, so work on the host that holds some of them does not matter.
    """
    def free(sip: int, sips: int, api: int) -> bool:
        wanted = (("tcp", sip), ("udp", sip), ("tcp", sips), ("tcp", api))
        return not any(port_in_use(proto, port) for proto, port in wanted)

    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    pool = range(high + 10 - high % 10, 65530, 10) if high < 65000 else range(21000, low - 10, 10)
    preferred = [(PORTS["sip"], PORTS["sips"], PORTS["api"])]
    candidates = preferred + [(b, b + 1, b + 2) for b in secrets.SystemRandom().sample(pool, min(50, len(pool)))]
    for sip, sips, api in candidates:
        if free(sip, sips, api):
            PORTS.update(sip=sip, sips=sips, api=api)
            return
    raise Failed("found no free ports for the container's Warden")


class Container:
    """A booted systemd-nspawn container on an overlay of the cached tree."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.dir = WORK / "container"
        self.root = self.dir / "root"
        self.upper = self.dir / "upper"
        self.name = f"warden-deb-test-{os.getpid()}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader: int | None = None
        self.mounted = False

    def start(self) -> None:
        if os.path.ismount(self.root):  # left by a run that was killed outright
            subprocess.run(["umount", "-l", str(self.root)], capture_output=True, timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)
        for d in (self.root, self.upper, self.dir / "work"):
            d.mkdir(parents=True)
        run(["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={self.base},upperdir={self.upper},workdir={self.dir / 'work'}", str(self.root)], timeout=30)
        self.mounted = True
        hosts = self.path("/etc/hosts")
        if not hosts.exists():  # debootstrap makes none; an installed Debian has one (the tests need localhost)
            hosts.write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
        archives = CACHE / "apt-archives"
        (archives / "partial").mkdir(parents=True, exist_ok=True)
        cmd = ["systemd-nspawn", "--quiet", "--keep-unit", "--register=no", "--boot",
               f"--directory={self.root}", f"--machine={self.name}", "--console=read-only",
               "--link-journal=no", "--resolv-conf=copy-host", "--timezone=off",
               f"--bind={archives}:/var/cache/apt/archives"]
        detail("$ " + " ".join(cmd))
        console = open(WORK / "console.log", "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                     start_new_session=True, env={"PATH": CLEAN_PATH, "LANG": "C.UTF-8"})
        console.close()
        deadline = time.monotonic() + 30
        while self.leader is None:
            if self.proc.poll() is not None:
                raise Failed(f"systemd-nspawn exited with {self.proc.returncode}: see {WORK / 'console.log'}")
            if time.monotonic() > deadline:
                raise Failed("the container's systemd did not appear within 30 s")
            self.leader = self._find_leader()
            time.sleep(0.2)
        state = self.sh("systemctl is-system-running --wait", timeout=120, check=False).stdout.strip()
        expect(state in ("running", "degraded"), f"the container did not boot: {state!r}")
        if state == "degraded":
            log("container boot is degraded: " + self.sh("systemctl --failed --no-legend --plain", timeout=30,
                                                          check=False).stdout.strip().replace("\n", "; "))
        log(f"container {self.name} booted (leader pid {self.leader}, {state})")

    def _find_leader(self) -> int | None:
        assert self.proc is not None
        todo = [self.proc.pid]
        while todo:
            pid = todo.pop()
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                try:
                    exe = os.readlink(f"/proc/{child}/exe")
                except OSError:
                    continue
                if exe.endswith("/systemd"):
                    return child
                todo.append(child)
        return None

    def sh(self, script: str, *, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a shell script as root inside the container (cwd /root)."""
        assert self.leader is not None
        cmd = ["nsenter", "-t", str(self.leader), "-a", "--", "/usr/bin/env", "-i", f"PATH={CLEAN_PATH}",
               "HOME=/root", "LANG=C.UTF-8", "TERM=dumb", "DEBIAN_FRONTEND=noninteractive", "SYSTEMD_PAGER=",
               "/bin/sh", "-c", f"cd /root && {script}"]
        detail(f"# {script}")
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise Failed(f"in the container, {script!r} did not finish within {timeout:g} s") from None
        detail(proc.stdout + proc.stderr)
        if check and proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
            raise Failed(f"in the container, {script!r} exited with {proc.returncode}:\n{tail}")
        return proc

    def path(self, inside: str) -> Path:
        """A container path as seen from the host."""
        return self.root / inside.lstrip("/")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)  # nspawn: an orderly shutdown of the container
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                log("the container did not shut down within 30 s; killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                if self.leader is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.leader, signal.SIGKILL)
                self.proc.wait(15)
        if self.mounted:
            if subprocess.run(["umount", str(self.root)], capture_output=True, timeout=30).returncode != 0:
                subprocess.run(["umount", "-l", str(self.root)], capture_output=True, timeout=30)
            self.mounted = False
        shutil.rmtree(self.dir, ignore_errors=True)


# --- 3. the checks ---------------------------------------------------------------------------------


def stat(c: Container, *paths: str) -> dict[str, str]:
    out = c.sh("stat -c '%n %a %U:%G' " + " ".join(paths), timeout=20).stdout
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out.splitlines()}


def s_client(c: Container, port: int, *args: str) -> str:
    """``openssl s_client -brief`` from inside the container; its report (stderr) and verdict."""
    proc = c.sh(f"timeout 15 openssl s_client -brief -connect 127.0.0.1:{port} -servername localhost "
                f"{' '.join(args)} </dev/null 2>&1", timeout=30, check=False)
    return proc.stdout


def served_serial(c: Container, port: int) -> str:
    out = c.sh(f"timeout 15 openssl s_client -connect 127.0.0.1:{port} -servername localhost </dev/null 2>/dev/null"
               " | openssl x509 -noout -serial", timeout=30, check=False).stdout.strip()
    expect(out.startswith("serial="), f"no certificate served on port {port}: {out!r}")
    return out.split("=", 1)[1]


def main_pid(c: Container) -> int:
    return int(c.sh("systemctl show -P MainPID warden-pbx", timeout=20).stdout.strip() or 0)


def wait_for(what: str, probe: object, timeout: float, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if probe():  # type: ignore[operator]
            return
        if time.monotonic() > deadline:
            raise Failed(f"{what} not within {timeout:g} s")
        time.sleep(interval)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def check_tls13(c: Container, port: int, what: str) -> None:
    out = s_client(c, port, "-tls1_3", "-CAfile", "/etc/warden-pbx/certs/ca.crt")
    expect("Protocol version: TLSv1.3" in out and "Verification: OK" in out,
           f"{what} (:{port}) did not give a verified TLS 1.3 session:\n{out}")
    suite = re.search(r"Ciphersuite: (\S+)", out)
    log(f"{what} :{port}: TLSv1.3, {suite.group(1) if suite else '?'}, verified with the generated CA")
    old = s_client(c, port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    expect("CONNECTION ESTABLISHED" not in old, f"{what} (:{port}) accepted TLS 1.1:\n{old}")


# A phone: REGISTER over TLS with a digest answer, from the host (a phone is another machine).

def _sip_read(sock: ssl.SSLSocket, timeout: float = 5.0) -> tuple[int, dict[str, str]]:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise Failed("the PBX closed the phone's TLS connection")
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    return status, headers


def register_phone(ca: Path, port: int) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(ca))
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="localhost")
    expect(sock.version() == "TLSv1.3", f"the phone got {sock.version()}, not TLSv1.3")
    local = sock.getsockname()
    call_id, uri = secrets.token_hex(8), f"sip:127.0.0.1:{port};transport=tls"

    def request(cseq: int, auth: str = "") -> bytes:
        lines = [f"REGISTER {uri} SIP/2.0",
                 f"Via: SIP/2.0/TLS {local[0]}:{local[1]};branch=z9hG4bK{secrets.token_hex(6)};rport",
                 f"From: <sip:{EXT}@127.0.0.1>;tag={secrets.token_hex(4)}", f"To: <sip:{EXT}@127.0.0.1>",
                 f"Call-ID: {call_id}", f"CSeq: {cseq} REGISTER",
                 f"Contact: <sip:{EXT}@{local[0]}:{local[1]};transport=tls>", "Expires: 3600",
                 "Max-Forwards: 70", "User-Agent: warden-deb-test-phone"]
        if auth:
            lines.append(f"Authorization: {auth}")
        return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()

    sock.sendall(request(1))
    status, headers = _sip_read(sock)
    expect(status == 401 and "www-authenticate" in headers, f"REGISTER without credentials got {status}")
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', headers["www-authenticate"].split(" ", 1)[1]))
    md5 = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731  (digest MD5 is what phones speak)
    ha1, ha2 = md5(f"{EXT}:{params['realm']}:{EXT_PASSWORD}"), md5(f"REGISTER:{uri}")
    auth = f'Digest username="{EXT}", realm="{params["realm"]}", nonce="{params["nonce"]}", uri="{uri}", '
    if "auth" in params.get("qop", "").split(","):
        cnonce, nc = secrets.token_hex(8), "00000001"
        response = md5(f"{ha1}:{params['nonce']}:{nc}:{cnonce}:auth:{ha2}")
        auth += f'qop=auth, nc={nc}, cnonce="{cnonce}", '
    else:
        response = md5(f"{ha1}:{params['nonce']}:{ha2}")
    auth += f'response="{response}", algorithm=MD5'
    if "opaque" in params:
        auth += f', opaque="{params["opaque"]}"'
    sock.sendall(request(2, auth))
    status, _ = _sip_read(sock)
    expect(status == 200, f"REGISTER with credentials got {status}, not 200")
    return sock


# Bring up "lo" in a fresh network namespace (the base tree has no iproute2).
LOOPBACK_UP = """import fcntl, socket, struct
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 1
s = socket.socket()
flags = struct.unpack("16sH14x", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH14x", b"lo", 0)))[1]
fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))
"""


def repack_with_version(deb: Path, suffix: str) -> Path:
    """The same package with a higher version: what an upgrade looks like to dpkg."""
    tree = WORK / "repack"
    shutil.rmtree(tree, ignore_errors=True)
    run(["dpkg-deb", "-R", str(deb), str(tree)], timeout=60)
    control = tree / "DEBIAN" / "control"
    text = control.read_text()
    version = re.search(r"^Version: (\S+)$", text, re.MULTILINE).group(1)  # type: ignore[union-attr]
    control.write_text(text.replace(f"Version: {version}", f"Version: {version}{suffix}"))
    out = WORK / deb.name.replace(f"_{version}_", f"_{version}{suffix}_")
    run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(out)], timeout=120)
    shutil.rmtree(tree, ignore_errors=True)
    return out


def contacts(c: Container) -> int:
    rows = json.loads(c.sh("warden-pbx ext list --json", timeout=30).stdout)
    return next((int(r.get("contacts", 0)) for r in rows if r.get("number") == EXT), 0)


def api_get(ca: Path, token: str, path: str) -> tuple[int, object]:
    ctx = ssl.create_default_context(cafile=str(ca))
    req = urllib.request.Request(f"https://127.0.0.1:{PORTS['api']}{path}",
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def test_in_container(c: Container, deb: Path, source: Path, *, suite: bool, peers: bool) -> None:
    """Everything a user does with the package, in order; ``source`` is the tree the .deb was built from."""
    cfg, certs = "/etc/warden-pbx/config.yml", "/etc/warden-pbx/certs"
    shutil.copy2(deb, c.path(f"/root/{deb.name}"))

    with step("apt install ./" + deb.name):
        busy = [f"{p}/{n}" for p, n in DEFAULT_PORTS if port_in_use(p, n)]
        if busy:  # the packaged defaults would clash with the host: keep postinst from starting it
            log(f"host ports {', '.join(busy)} are in use: installing with policy-rc.d (no start by postinst)")
            c.sh("printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d")
        c.sh("apt-get update -q", timeout=180)
        out = c.sh(f"apt install -y -o APT::Keep-Downloaded-Packages=true ./{deb.name}", timeout=600).stdout
        pulled = [p for p in DEPENDENCIES if re.search(rf"Setting up {re.escape(p)}[ :]", out)]
        expect(pulled == list(DEPENDENCIES), f"apt did not install the dependencies from the archive: {pulled}")
        log("apt pulled " + ", ".join(pulled) + " from the archive")
        expect("/etc/warden-pbx/admin-token" in out, "postinst did not say where the admin token is")
        for line in out.splitlines():
            if line.startswith("warden-pbx:"):
                log("postinst: " + line.removeprefix("warden-pbx: "))
        if busy:
            c.sh("rm -f /usr/sbin/policy-rc.d")
        else:
            state = c.sh("systemctl is-active warden-pbx", check=False).stdout.strip()
            expect(state == "active", f"postinst did not start warden-pbx on the default ports: {state}")
            log("postinst started warden-pbx (default ports)")
        expect(c.sh("systemctl is-enabled warden-pbx", check=False).stdout.strip() == "enabled",
               "warden-pbx.service is not enabled")

    with step("user, directories, certificates and token"):
        user = c.sh("getent passwd warden", timeout=10).stdout.strip().split(":")
        expect(int(user[2]) < 1000 and user[6] == "/usr/sbin/nologin", f"warden is not a system user: {user}")
        modes = stat(c, "/etc/warden-pbx", certs, f"{certs}/ca.crt", f"{certs}/ca.key", f"{certs}/server.crt",
                     f"{certs}/server.key", "/etc/warden-pbx/admin-token", "/var/lib/warden-pbx",
                     "/var/log/warden-pbx", "/var/lib/warden-pbx/warden.db", cfg)
        wanted = {certs: "750 root:warden", f"{certs}/ca.key": "600 root:root",
                  f"{certs}/server.key": "640 root:warden", f"{certs}/server.crt": "644 root:root",
                  "/etc/warden-pbx/admin-token": "600 root:root", "/var/lib/warden-pbx": "750 warden:warden",
                  "/var/log/warden-pbx": "750 warden:warden", "/var/lib/warden-pbx/warden.db": "640 warden:warden",
                  cfg: "644 root:root"}
        wrong = {p: (modes.get(p), m) for p, m in wanted.items() if modes.get(p) != m}
        expect(not wrong, f"modes (got, wanted): {wrong}")
        token = c.path("/etc/warden-pbx/admin-token").read_text().strip()
        expect(bool(re.fullmatch(r"\S{20,}", token)), "the admin token file holds no token")
        c.sh("apt-get install -y -q -o APT::Keep-Downloaded-Packages=true logrotate", timeout=300)
        rot = c.sh("logrotate -d /etc/logrotate.d/warden-pbx 2>&1", timeout=30, check=False).stdout
        expect("error" not in rot.lower(), f"logrotate -d /etc/logrotate.d/warden-pbx:\n{rot}")
        conffiles = c.sh("dpkg-query -W -f '${Conffiles}' warden-pbx", timeout=10).stdout
        expect(cfg in conffiles, f"{cfg} is not a conffile")
        log("warden system user; certs 0750 root:warden, server.key 0640 root:warden, ca.key and admin-token "
            "0600 root; /var/lib and /var/log/warden-pbx 0750 warden; config.yml a conffile; logrotate -d clean")

    with step("systemd-analyze verify and security"):
        out = c.sh("systemd-analyze verify warden-pbx.service 2>&1", timeout=60, check=False)
        expect(out.returncode == 0 and not out.stdout.strip(), f"systemd-analyze verify:\n{out.stdout}")
        sec = c.sh("systemd-analyze security --no-pager warden-pbx.service 2>&1", timeout=60, check=False).stdout
        m = re.search(r"Overall exposure level for warden-pbx\.service: ([0-9.]+) (\S+)", sec)
        expect(m is not None and float(m.group(1)) <= 3.0, f"systemd-analyze security: {m.group(0) if m else sec}")
        log(f"verify clean; security exposure {m.group(1)} {m.group(2)}")  # type: ignore[union-attr]

    pick_ports()
    with step(f"move to ports {PORTS['sip']}/{PORTS['sips']}/{PORTS['api']}, restart, is-active"):
        c.sh(f"sed -i -e 's/^\\(  udp_port:\\|  tcp_port:\\) 5060$/\\1 {PORTS['sip']}/' "
             f"-e 's/^  tls_port: 5061$/  tls_port: {PORTS['sips']}/' -e 's/^  port: 9000$/  port: {PORTS['api']}/' {cfg}")
        text = c.path(cfg).read_text()
        expect(all(f": {p}" in text for p in PORTS.values()), "the ports were not changed in config.yml")
        expect(c.sh("warden-pbx check-config", timeout=30).stdout.strip() == "OK", "check-config is not OK")
        c.sh("systemctl restart warden-pbx", timeout=120)
        state = c.sh("systemctl is-active warden-pbx", check=False).stdout.strip()
        expect(state == "active", f"systemctl is-active warden-pbx: {state}")
        wait_for(f"the SIPS port {PORTS['sips']}", lambda: port_open(PORTS["sips"]), 10)
        wait_for(f"the API port {PORTS['api']}", lambda: port_open(PORTS["api"]), 30)
        log("systemctl is-active warden-pbx: active")

    with step("openssl s_client -tls1_3 on SIPS and the API"):
        check_tls13(c, PORTS["sips"], "SIPS")
        check_tls13(c, PORTS["api"], "admin API")

    ca = c.path(f"{certs}/ca.crt")
    with step("a phone registers over TLS; the admin token works"):
        out = c.sh(f"warden-pbx ext add {EXT} --name 'deb test' --password {EXT_PASSWORD}", timeout=30).stdout
        expect(f"added extension {EXT}" in out, out)
        owners = c.sh("stat -c '%U' /var/lib/warden-pbx/*", timeout=10).stdout.split()
        expect(set(owners) == {"warden"}, f"root's `warden-pbx ext add` left files the service cannot use: {owners}")
        phone = register_phone(ca, PORTS["sips"])
        wait_for("the registration in `warden-pbx ext list`", lambda: contacts(c) == 1, 10)
        log(f"extension {EXT} registered over TLS 1.3 with digest auth; `warden-pbx ext list` shows 1 contact")
        token = c.path("/etc/warden-pbx/admin-token").read_text().strip()
        status, body = api_get(ca, token, "/api/v1/extensions")
        expect(status == 200, f"GET /api/v1/extensions with the admin token: {status}")
        expect(EXT in json.dumps(body), f"the API does not list extension {EXT}: {body}")
        status, _ = api_get(ca, "wrong-token", "/api/v1/extensions")
        expect(status == 401, f"a wrong token got {status}, not 401")
        log("admin token from /etc/warden-pbx/admin-token lists the extension (a wrong one gets 401)")

    with step("systemctl reload serves a new certificate"):
        pid = main_pid(c)
        before = {p: served_serial(c, PORTS[p]) for p in ("sips", "api")}
        c.sh(f"warden-pbx cert generate --out-dir {certs} --force --san localhost --san 127.0.0.1 >/dev/null",
             timeout=60)
        mode = c.sh(f"stat -c '%a %U:%G' {certs}/server.key", timeout=10).stdout.strip()
        expect(mode == "640 root:warden", f"a regenerated key lost the group the service reads it by: {mode}")
        # An admin's slip: a key only root can read. The reload must fail and change nothing.
        c.sh(f"chgrp root {certs}/server.key && chmod 0600 {certs}/server.key")
        refused = c.sh("systemctl reload warden-pbx", timeout=60, check=False)
        expect(refused.returncode != 0, "systemctl reload succeeded with a key the service cannot read")
        expect(c.sh("systemctl is-active warden-pbx", check=False).stdout.strip() == "active",
               "a refused reload stopped the service")
        expect(served_serial(c, PORTS["sips"]) == before["sips"], "a refused reload changed the certificate")
        log("reload with an unreadable key: refused, service active, old certificate still served")
        c.sh(f"chgrp warden {certs}/server.key && chmod 0640 {certs}/server.key")
        c.sh("systemctl reload warden-pbx", timeout=60)
        # gunicorn restarts its workers gracefully: old ones may answer for a moment longer.
        for p in ("sips", "api"):
            wait_for(f"only the new certificate on {p}",
                     lambda p=p: all(served_serial(c, PORTS[p]) != before[p] for _ in range(4)), 30)
        expect(main_pid(c) == pid, "reload restarted the main process")
        check_tls13(c, PORTS["sips"], "SIPS after reload")
        check_tls13(c, PORTS["api"], "admin API after reload")
        log(f"serials {before['sips']} -> {served_serial(c, PORTS['sips'])} (SIPS and API), same MainPID {pid}")

    with step("Restart=on-failure after the PBX is killed"):
        pid = main_pid(c)
        c.sh("systemctl kill --kill-who=main --signal=SIGKILL warden-pbx", timeout=20)
        wait_for("a restarted PBX", lambda: main_pid(c) not in (0, pid)
                 and c.sh("systemctl is-active warden-pbx", check=False).stdout.strip() == "active", 30)
        wait_for("SIPS after the restart", lambda: port_open(PORTS["sips"]), 15)
        log(f"killed MainPID {pid}; systemd restarted it as {main_pid(c)}")

    with step("systemctl restart keeps registrations"):
        phone.close()
        pid = main_pid(c)
        c.sh("systemctl restart warden-pbx", timeout=120)
        expect(c.sh("systemctl is-active warden-pbx", check=False).stdout.strip() == "active", "not active")
        expect(main_pid(c) != pid, "restart kept the same main process")
        expect(contacts(c) == 1, f"after a restart extension {EXT} has {contacts(c)} contacts, not 1")
        log(f"new MainPID {main_pid(c)}; extension {EXT} still has its registration")

    with step("an upgrade keeps certificates, token, config and data"):
        newer = repack_with_version(deb, "+debtest1")
        shutil.copy2(newer, c.path(f"/root/{newer.name}"))
        kept = [f"{certs}/ca.key", f"{certs}/server.crt", f"{certs}/server.key", "/etc/warden-pbx/admin-token", cfg]
        before = {p: hashlib.sha256(c.path(p).read_bytes()).hexdigest() for p in kept}
        tokens = c.sh("warden-pbx api token list --json", timeout=30).stdout
        pid = main_pid(c)
        out = c.sh(f"apt install -y ./{newer.name}", timeout=300).stdout
        expect("warden-pbx:" not in out, f"the upgrade's postinst made something new:\n{out}")
        version = c.sh("dpkg-query -W -f '${Version}' warden-pbx", timeout=10).stdout.strip()
        expect(version.endswith("+debtest1"), f"not upgraded: {version}")
        changed = [p for p in kept if hashlib.sha256(c.path(p).read_bytes()).hexdigest() != before[p]]
        expect(not changed, f"the upgrade changed {changed}")
        expect(c.sh("warden-pbx api token list --json", timeout=30).stdout == tokens, "the upgrade changed the tokens")
        expect(c.sh("systemctl is-active warden-pbx", check=False).stdout.strip() == "active", "not active")
        expect(main_pid(c) not in (0, pid), "the upgrade did not restart the service")
        expect(contacts(c) == 1, f"after the upgrade extension {EXT} has {contacts(c)} contacts")
        log(f"upgraded to {version}: restarted, certificates, token, edited config.yml and registration kept")

    if suite:
        with step("the Python suite against the installed package (debian/tests/run-suite)"):
            parts = ["hermetic"] + (["peers"] if peers else [])
            deps = "python3-pytest python3-hypothesis python3-requests openssl"
            if peers:
                deps += " sip-tester stunnel4 baresip"
            c.sh(f"apt-get install -y -q -o APT::Keep-Downloaded-Packages=true {deps}", timeout=600)
            src = c.path("/root/src")
            for rel in ("debian/tests", "tests", "conf", "tools", "bench/sipp", "README.md"):
                (src / rel).parent.mkdir(parents=True, exist_ok=True)
                if (source / rel).is_dir():
                    shutil.copytree(source / rel, src / rel, ignore=shutil.ignore_patterns("__pycache__", ".*"))
                else:
                    shutil.copy2(source / rel, src / rel)
            for part in parts:
                # In a network namespace of its own (only loopback, which is all the suite uses): the
                # container shares the host's ports, and other work on the host must not collide with
                # the suite's free_port() picks.
                c.path("/root/src/loopback-up.py").write_text(LOOPBACK_UP)
                out = c.sh(f"cd /root/src && mkdir -p /root/autopkgtest-{part} && unshare --net sh -c "
                           f"'python3 loopback-up.py && AUTOPKGTEST_TMP=/root/autopkgtest-{part} "
                           f"debian/tests/run-suite {part}' 2>&1", timeout=900, check=False)
                for line in out.stdout.splitlines():  # pytest's verdicts, the failed tests, a rerun
                    if re.search(r"\d+ (passed|failed).* in [0-9.]+s|^(FAILED|ERROR) tests/|rerunning", line):
                        log(f"run-suite {part}: {line.strip('= ')}")
                expect(out.returncode == 0, f"run-suite {part} failed:\n" + "\n".join(out.stdout.splitlines()[-40:]))

    with step("apt remove stops it and keeps config and data"):
        c.sh("apt remove -y warden-pbx", timeout=300)
        state = c.sh("systemctl is-active warden-pbx", check=False).stdout.strip()
        expect(state in ("inactive", "unknown"), f"after apt remove warden-pbx is {state}")
        expect(c.sh("pgrep -u warden", check=False).returncode == 1, "processes of the warden user are left")
        expect(not port_open(PORTS["sips"]) and not port_open(PORTS["api"]), "ports still open after apt remove")
        kept = ["/etc/warden-pbx/config.yml", f"{certs}/server.key", "/etc/warden-pbx/admin-token",
                "/var/lib/warden-pbx/warden.db"]
        missing = [p for p in kept if not c.path(p).exists()]
        expect(not missing, f"apt remove deleted {missing}")
        expect(c.sh("getent passwd warden", check=False).returncode == 0, "apt remove deleted the warden user")
        status = c.sh("dpkg-query -W -f '${db:Status-Abbrev}' warden-pbx", check=False).stdout.strip()
        expect(status == "rc", f"dpkg status after remove: {status!r}")
        log("stopped (no warden processes, ports closed); config, certificates, token and database kept")

    with step("apt purge leaves nothing behind"):
        c.sh("apt purge -y warden-pbx", timeout=300)
        left = [p for p in ("/etc/warden-pbx", "/var/lib/warden-pbx", "/var/log/warden-pbx") if c.path(p).exists()]
        expect(not left, f"apt purge left {left}")
        for db in ("passwd", "group"):
            expect(c.sh(f"getent {db} warden", check=False).returncode == 2, f"apt purge left warden in {db}")
        expect(c.sh("dpkg-query -W warden-pbx", check=False).returncode != 0
               or not c.sh("dpkg-query -W -f '${db:Status-Abbrev}' warden-pbx", check=False).stdout.strip(),
               "dpkg still knows warden-pbx")
        # Ours: the test's own files. man-db's: the formatted-page cache `man` wrote when
        # systemd-analyze verify looked the page up (man-db's cron job expires it, as for any package).
        ours = {"root/warden-pbx_", "root/src", "root/autopkgtest-hermetic", "root/autopkgtest-peers",
                "var/cache/man/"}
        stray = sorted(str(p.relative_to(c.upper)) for p in c.upper.rglob("*warden*")
                       if not any(str(p.relative_to(c.upper)).startswith(o) for o in ours))
        expect(not stray, f"files left after purge: {stray}")
        log("no /etc, /var/lib or /var/log/warden-pbx, no warden user or group, no file named *warden* left")


# --- main ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    global _log_file
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep-going-on-lintian", action="store_true", help="report lintian tags, do not fail")
    parser.add_argument("--no-suite", action="store_true", help="skip the test suite in the container")
    parser.add_argument("--peers", action="store_true", help="also run the sipp/baresip tests in the container")
    parser.add_argument("--check", action="store_true", help="build with the build-time tests (not nocheck)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("deb-test: needs root (debootstrap, mount, systemd-nspawn)", file=sys.stderr)
        return 2

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    WORK.mkdir(parents=True, exist_ok=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    _log_file = open(WORK / "deb-test.log", "w")
    lock = open(CACHE / "lock", "w")
    container: Container | None = None
    try:
        deadline = time.monotonic() + 900
        while True:  # one run at a time: the cache and the ports are shared
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Failed(f"another deb-test holds {CACHE / 'lock'}") from None
                time.sleep(2)
        log(f"deb-test: log in {WORK / 'deb-test.log'}")
        with step("build the .deb (dpkg-buildpackage -us -uc -b)"):
            deb, changes, source = build(args.check)
        with step("lintian"):
            run_lintian(changes, strict=not args.keep_going_on_lintian)
        with step(f"boot a Debian 12 ({SUITE}) container"):
            container = Container(base_tree())
            container.start()
        test_in_container(container, deb, source, suite=not args.no_suite, peers=args.peers)
    except (Failed, KeyboardInterrupt) as exc:
        log(f"FAILED: {exc}" if isinstance(exc, Failed) else f"interrupted ({exc or 'SIGINT'})")
        if container is not None and container.leader is not None:
            with contextlib.suppress(Failed):
                journal = container.sh("journalctl -u warden-pbx --no-pager -n 80 -o short-monotonic",
                                       timeout=30, check=False).stdout
                log("journal of warden-pbx.service (last 80 lines):\n" + journal)
        return 1
    finally:
        if container is not None:
            log("stopping the container")
            container.stop()
        lock.close()
        for name, took in TIMINGS:
            log(f"timing {took:6.1f} s  {name}")
        log(f"total {time.monotonic() - START:.1f} s")
        _log_file.close()
    print("deb-test: PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())

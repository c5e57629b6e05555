"""Generate a local CA and a TLS server certificate for Warden PBX.

Warden is TLS-first: SIPS listeners and the HTTPS admin API refuse to start
without a certificate. On a fresh install there is rarely a public CA to ask,
so this tool makes an in-house CA (``ca.crt``/``ca.key``) plus a server
certificate it signs (``server.crt``/``server.key``). Phones and browsers trust
``ca.crt`` once; the server certificate can then be re-issued (new SANs, expiry)
by running the tool again, which reuses the existing CA.

Only the ``cryptography`` package is used, never the ``openssl`` binary, and
only APIs present in both Debian 12's release (38) and the current PyPI one.

Strategy: everything is built in memory first, then written. Key files are
created with mode 0600 by ``os.open`` so they are never world readable, not
even for an instant. Without ``force`` files are created with ``O_EXCL`` (an
existing file is never clobbered, even by a race) and whatever this run
created is removed again if a later write fails. With ``force`` all files are
staged beside their targets first and then moved over them with
``os.replace``, so a reader sees either the old file or the new one, never a
half-written one.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import logging
import os
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from warden.errors import CertificateError

__all__ = [
    "KEY_TYPES",
    "GeneratedFiles",
    "generate",
    "generate_client",
    "add_arguments",
    "run",
    "main",
]

logger = logging.getLogger(__name__)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

#: Supported key types. RSA 2048 is the default because many hardware phones
#: cannot do ECDSA; the CA key is always made with the same type as the leaf.
KEY_TYPES: tuple[str, ...] = ("rsa2048", "rsa3072", "rsa4096", "ecdsa-p256")

CA_CERT_NAME = "ca.crt"
CA_KEY_NAME = "ca.key"
SERVER_CERT_NAME = "server.crt"
SERVER_KEY_NAME = "server.key"

_KEY_MODE = 0o600
_CERT_MODE = 0o644
_DIR_MODE = 0o755
# Clock skew between the PBX and the phones must not make a fresh cert "not yet valid".
_BACKDATE = datetime.timedelta(minutes=5)
# X.520 upper bound for commonName; cryptography rejects longer values.
_CN_MAX = 64


@dataclass(frozen=True, slots=True)
class GeneratedFiles:
    """Where :func:`generate` put its output."""

    ca_cert: Path
    """The CA certificate: install it as trusted on phones and clients."""
    ca_key: Path
    """The CA private key (0600): keep it private, it signs future server certs."""
    server_cert: Path
    """The chain a server sends: leaf first, then the CA."""
    server_key: Path
    """The server private key (0600)."""
    ca_reused: bool = False
    """True when an existing CA signed the new leaf instead of a fresh one."""


def default_sans() -> list[str]:
    """Names a freshly installed PBX is reached by before DNS is set up."""
    return ["localhost", socket.gethostname(), "127.0.0.1", "::1"]


def generate(
    out_dir: Path,
    *,
    sans: list[str] | None = None,
    key_type: str = "rsa2048",
    days: int = 825,
    ca_days: int = 3650,
    common_name: str | None = None,
    force: bool = False,
) -> GeneratedFiles:
    """Write ``server.crt``/``server.key`` signed by a local CA in ``out_dir``.

    An existing ``ca.crt``/``ca.key`` pair is reused unless ``force`` is set, so
    clients that already trust the CA keep working. Existing server files are
    only replaced with ``force``; with ``force`` the CA is replaced as well.
    ``days`` defaults to 825, the longest leaf lifetime Apple clients accept.

    Raises :class:`CertificateError` for bad arguments, existing files, an
    unusable existing CA or an I/O failure.
    """
    _check_args(key_type, days, ca_days)
    out_dir = Path(out_dir)
    files = GeneratedFiles(
        ca_cert=out_dir / CA_CERT_NAME,
        ca_key=out_dir / CA_KEY_NAME,
        server_cert=out_dir / SERVER_CERT_NAME,
        server_key=out_dir / SERVER_KEY_NAME,
    )
    if not force:
        for path in (files.server_cert, files.server_key):
            if os.path.lexists(path):
                raise CertificateError(f"{path} already exists; use --force to replace it")
    general_names = _parse_sans(default_sans() if sans is None else sans)
    cn = _leaf_common_name(common_name, general_names)
    _ensure_dir(out_dir)

    now = datetime.datetime.now(datetime.timezone.utc)
    existing = None if force else _load_existing_ca(files)
    if existing is None:
        ca_key = _new_key(key_type)
        ca_cert = _build_ca(ca_key, now, ca_days)
    else:
        ca_cert, ca_key = existing
        logger.info("reusing the CA in %s to sign the new server certificate", files.ca_cert)

    leaf_key = _new_key(key_type)
    leaf_cert = _build_leaf(leaf_key, cn, general_names, ca_cert, ca_key, now, days)

    outputs: list[tuple[Path, bytes, int]] = []
    if existing is None:
        outputs.append((files.ca_key, _key_pem(ca_key), _KEY_MODE))
        outputs.append((files.ca_cert, _cert_pem(ca_cert), _CERT_MODE))
    outputs.append((files.server_key, _key_pem(leaf_key), _KEY_MODE))
    outputs.append((files.server_cert, _cert_pem(leaf_cert) + _cert_pem(ca_cert), _CERT_MODE))
    _write_all(outputs, replace=force)
    for path, _, _ in outputs:
        logger.info("wrote %s", path)
    return GeneratedFiles(
        ca_cert=files.ca_cert,
        ca_key=files.ca_key,
        server_cert=files.server_cert,
        server_key=files.server_key,
        ca_reused=existing is not None,
    )


def generate_client(
    out_dir: Path,
    extension: str,
    *,
    domain: str = "localhost",
    key_type: str = "ecdsa-p256",
    days: int = 825,
    force: bool = False,
) -> tuple[Path, Path]:
    """Write ``client-EXT.crt``/``client-EXT.key``: a phone's device certificate
    for mutual TLS, signed by the CA in ``out_dir`` (made by :func:`generate`).

    The subject CN is the extension and the SAN the URI ``sip:EXT@domain``, so
    with ``security.tls_client_cert_binds_extension`` the phone may register
    only that extension. ECDSA P-256 by default; ``rsa2048`` for old phones.
    """
    _check_args(key_type, days, 1)
    if not extension or len(extension) > _CN_MAX or not all(c.isalnum() or c in "._-+" for c in extension):
        raise CertificateError(f"invalid extension {extension!r} for a client certificate")
    out_dir = Path(out_dir)
    files = GeneratedFiles(out_dir / CA_CERT_NAME, out_dir / CA_KEY_NAME, out_dir / SERVER_CERT_NAME,
                           out_dir / SERVER_KEY_NAME)
    existing = _load_existing_ca(files)
    if existing is None:
        raise CertificateError(f"no CA in {out_dir}: run 'warden-pbx cert generate --out-dir {out_dir}' first")
    ca_cert, ca_key = existing
    cert_path, key_path = out_dir / f"client-{extension}.crt", out_dir / f"client-{extension}.key"
    key = _new_key(key_type)
    now = datetime.datetime.now(datetime.timezone.utc)
    not_after = min(now + datetime.timedelta(days=days), _not_valid_after(ca_cert))
    cert = _sign_leaf(
        key, extension, [x509.UniformResourceIdentifier(f"sip:{extension}@{domain}")],
        [ExtendedKeyUsageOID.CLIENT_AUTH], ca_cert, ca_key, now, not_after, subject_key_id=False,
    )
    _write_all([(key_path, _key_pem(key), _KEY_MODE), (cert_path, _cert_pem(cert), _CERT_MODE)], replace=force)
    return cert_path, key_path


def _check_args(key_type: str, days: int, ca_days: int) -> None:
    """Reject bad arguments before any key is generated or file touched."""
    if key_type not in KEY_TYPES:
        raise CertificateError(
            f"unknown key type {key_type!r}; choose one of {', '.join(KEY_TYPES)}"
        )
    if days < 1:
        raise CertificateError(f"--days must be at least 1, got {days}")
    if ca_days < 1:
        raise CertificateError(f"--ca-days must be at least 1, got {ca_days}")


def _parse_sans(entries: list[str]) -> list[x509.GeneralName]:
    """Turn SAN strings into IPAddress or DNSName entries, dropping duplicates.

    IPv6 literals may be written in brackets (``[::1]``). Internationalised
    names are stored in their ASCII (IDNA) form, as certificates require.
    """
    names: list[x509.GeneralName] = []
    for raw in entries:
        entry = raw.strip()
        if not entry:
            continue
        literal = entry[1:-1] if entry.startswith("[") and entry.endswith("]") else entry
        name: x509.GeneralName
        try:
            name = x509.IPAddress(ipaddress.ip_address(literal))
        except ValueError:
            name = x509.DNSName(_dns_ascii(entry))
        if name not in names:
            names.append(name)
    if not names:
        raise CertificateError("no subject alternative names given")
    return names


def _dns_ascii(entry: str) -> str:
    """Return ``entry`` as an ASCII DNS name, or raise CertificateError."""
    if entry.isascii():
        value = entry.lower()
    else:
        try:
            value = entry.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise CertificateError(f"invalid DNS name {entry!r} in --san: {exc}") from None
    if any(c.isspace() or c in "/\\@:" for c in value):
        raise CertificateError(f"invalid DNS name {entry!r} in --san")
    return value


def _leaf_common_name(common_name: str | None, names: list[x509.GeneralName]) -> str:
    """Pick the leaf CN: the explicit one, else the first DNS SAN that fits.

    Clients match on the SAN, not the CN; the CN only labels the certificate
    for humans, so a long hostname falls back rather than fails.
    """
    if common_name is not None:
        if not 1 <= len(common_name) <= _CN_MAX:
            raise CertificateError(
                f"--cn must be 1 to {_CN_MAX} characters, got {len(common_name)}"
            )
        return common_name
    dns = [n.value for n in names if isinstance(n, x509.DNSName)]
    candidates = dns + [str(n.value) for n in names if isinstance(n, x509.IPAddress)]
    for value in candidates:
        if len(value) <= _CN_MAX:
            return str(value)
    return "Warden PBX server"


def _ca_common_name() -> str:
    """CA subject CN, with the hostname cut so it fits the 64-char limit."""
    prefix, suffix = "Warden PBX Local CA (", ")"
    host = socket.gethostname()[: _CN_MAX - len(prefix) - len(suffix)]
    return f"{prefix}{host}{suffix}"


def _new_key(key_type: str) -> PrivateKey:
    """Generate a private key of ``key_type`` (already validated)."""
    if key_type == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[3:]))


def _build_ca(key: PrivateKey, now: datetime.datetime, days: int) -> x509.Certificate:
    """Self-signed CA limited to signing leaves (pathlen 0)."""
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Warden PBX"),
            x509.NameAttribute(NameOID.COMMON_NAME, _ca_common_name()),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
            critical=False,
        )
    )
    return builder.sign(key, hashes.SHA256())


def _build_leaf(
    key: PrivateKey,
    common_name: str,
    names: list[x509.GeneralName],
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    now: datetime.datetime,
    days: int,
) -> x509.Certificate:
    """Server certificate for ``names``, signed by the CA.

    The leaf never outlives its CA: past that date no client could verify it,
    so a longer validity would only mislead whoever reads the expiry.
    """
    not_after = now + datetime.timedelta(days=days)
    ca_not_after = _not_valid_after(ca_cert)
    if not_after > ca_not_after:
        logger.warning(
            "the CA expires on %s; the server certificate is cut to that date",
            ca_not_after.date().isoformat(),
        )
        not_after = ca_not_after
    # clientAuth too: SIP over TLS peers (trunks, other PBXs) use the same
    # certificate when they connect out.
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    return _sign_leaf(key, common_name, names, usages, ca_cert, ca_key, now, not_after)


def _sign_leaf(
    key: PrivateKey,
    common_name: str,
    names: list[x509.GeneralName],
    usages: list[x509.ObjectIdentifier],
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    now: datetime.datetime,
    not_after: datetime.datetime,
    *,
    subject_key_id: bool = True,
) -> x509.Certificate:
    """End-entity certificate signed by the CA, for server and client leaves.

    Key encipherment only for RSA keys (ECDSA keys cannot encipher). Client
    certificates have always been issued without a subject key identifier;
    ``subject_key_id=False`` keeps them that way.
    """
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=is_rsa,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
    )
    if subject_key_id:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    builder = builder.add_extension(_authority_key_id(ca_cert, ca_key), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _authority_key_id(ca_cert: x509.Certificate, ca_key: PrivateKey) -> x509.AuthorityKeyIdentifier:
    """AKI matching the CA's own SKI; a reused CA made elsewhere may lack one."""
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)


def _not_valid_after(cert: x509.Certificate) -> datetime.datetime:
    """Aware UTC expiry on every cryptography release.

    ``not_valid_after_utc`` only exists from 42 on, and the naive
    ``not_valid_after`` is deprecated there.
    """
    aware = getattr(cert, "not_valid_after_utc", None)
    if isinstance(aware, datetime.datetime):
        return aware
    return cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)


def _load_existing_ca(
    files: GeneratedFiles,
) -> tuple[x509.Certificate, PrivateKey] | None:
    """Return the CA in ``files`` if both halves exist, else None.

    A half-present or broken CA is an error rather than silently replaced:
    replacing it would break every client that already trusts it.
    """
    have_cert = files.ca_cert.exists()
    have_key = files.ca_key.exists()
    if not have_cert and not have_key:
        return None
    if not (have_cert and have_key):
        present, missing = (
            (files.ca_cert, files.ca_key) if have_cert else (files.ca_key, files.ca_cert)
        )
        raise CertificateError(
            f"{present} exists but {missing} is missing; "
            "restore it or use --force to create a new CA"
        )
    try:
        cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    except OSError as exc:
        raise CertificateError(f"cannot read the existing CA: {exc}") from None
    except TypeError:
        raise CertificateError(
            f"{files.ca_key} is encrypted; decrypt it or use --force to create a new CA"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateError(
            f"cannot load the existing CA from {files.ca_cert} and {files.ca_key}: {exc}"
        ) from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise CertificateError(f"{files.ca_key} is not an RSA or ECDSA key")
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise CertificateError(f"{files.ca_key} does not belong to {files.ca_cert}")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.value.ca:
        raise CertificateError(f"{files.ca_cert} is not a CA certificate")
    if _not_valid_after(cert) <= datetime.datetime.now(datetime.timezone.utc):
        raise CertificateError(f"{files.ca_cert} has expired; use --force to create a new CA")
    return cert, key


def _key_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM: the PBX starts unattended, with no one to type a passphrase."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _ensure_dir(out_dir: Path) -> None:
    """Create ``out_dir`` (0755) if missing; refuse a path that is not a directory."""
    if out_dir.is_dir():
        return
    if os.path.lexists(out_dir):
        raise CertificateError(f"{out_dir} exists and is not a directory")
    try:
        out_dir.mkdir(mode=_DIR_MODE, parents=True)
        os.chmod(out_dir, _DIR_MODE)  # mkdir's mode is filtered by the umask
    except OSError as exc:
        raise CertificateError(f"cannot create {out_dir}: {exc}") from None


def _write_all(outputs: list[tuple[Path, bytes, int]], *, replace: bool) -> None:
    """Write every file or, on failure, none of the new ones (see module docstring)."""
    if replace:
        _replace_all(outputs)
        return
    done: list[Path] = []
    try:
        for path, data, mode in outputs:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
            done.append(path)
            _fill(fd, data, mode)
    except FileExistsError as exc:
        _remove(done)
        raise CertificateError(
            f"{exc.filename} already exists; use --force to replace it"
        ) from None
    except OSError as exc:
        _remove(done)
        raise CertificateError(
            f"cannot write {exc.filename or 'output'}: {exc.strerror or exc}"
        ) from None


def _replace_all(outputs: list[tuple[Path, bytes, int]]) -> None:
    """Stage every file beside its target, then move them all into place.

    Staging first means a failed write (disk full) leaves the old set intact
    instead of a new CA next to an old server certificate.
    """
    staged: list[tuple[str, Path]] = []
    try:
        for path, data, mode in outputs:
            # mkstemp creates with O_EXCL and mode 0600, so keys are never exposed.
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            staged.append((tmp, path))
            try:
                # a replaced file keeps its group and group bits: a packaged server.key
                # is 0640 root:warden, and the service must still read the new one
                old = os.stat(path)
                os.fchown(fd, -1, old.st_gid)
                mode |= old.st_mode & 0o040 if mode & 0o400 else 0
            except FileNotFoundError:
                pass
            _fill(fd, data, mode)
        while staged:
            tmp, path = staged[0]
            os.replace(tmp, path)
            staged.pop(0)
    except OSError as exc:
        _remove([Path(tmp) for tmp, _ in staged])
        raise CertificateError(
            f"cannot write {exc.filename or 'output'}: {exc.strerror or exc}"
        ) from None


def _fill(fd: int, data: bytes, mode: int) -> None:
    """Set ``mode``, write ``data`` durably, and close ``fd``.

    The explicit fchmod matters for certificates: the umask may have narrowed
    0644, and mkstemp always starts at 0600.
    """
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(paths: list[Path]) -> None:
    """Best-effort rollback of files this run created."""
    for path in paths:
        try:
            os.unlink(path)
        except OSError as exc:
            logger.warning("could not remove partial output %s: %s", path, exc)


def _split_csv(value: str) -> list[str]:
    """argparse type: ``--san a,b`` means the same as ``--san a --san b``."""
    return [part.strip() for part in value.split(",") if part.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the certificate options, so ``warden-pbx`` can reuse them as a subcommand."""
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=Path("certs"),
        help="directory for ca.crt, ca.key, server.crt, server.key (default: ./certs)",
    )
    parser.add_argument(
        "--san",
        action="append",
        type=_split_csv,
        metavar="NAME",
        help="subject alternative name (DNS name or IP address); repeatable or "
        "comma-separated; replaces the defaults (localhost, this hostname, "
        "127.0.0.1, ::1)",
    )
    parser.add_argument(
        "--key-type",
        choices=KEY_TYPES,
        default="rsa2048",
        help="key type for the CA and server (default: rsa2048, which most "
        "hardware phones support)",
    )
    parser.add_argument(
        "--days", type=int, default=825, help="server certificate validity (default: 825)"
    )
    parser.add_argument(
        "--ca-days", type=int, default=3650, help="CA validity for a new CA (default: 3650)"
    )
    parser.add_argument(
        "--cn", default=None, help="server certificate common name (default: first DNS SAN)"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace existing files, including the CA",
    )


def run(args: argparse.Namespace) -> int:
    """Generate from parsed arguments and report; 0 on success, 1 on CertificateError."""
    sans = [name for group in args.san for name in group] if args.san else None
    try:
        files = generate(
            args.out_dir,
            sans=sans,
            key_type=args.key_type,
            days=args.days,
            ca_days=args.ca_days,
            common_name=args.cn,
            force=args.force,
        )
        leaf = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    except CertificateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot read back {args.out_dir}: {exc}", file=sys.stderr)
        return 1
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = [str(n.value) for n in san]
    first_dns = next((str(n.value) for n in san if isinstance(n, x509.DNSName)), None)
    ca_note = "reused, unchanged" if files.ca_reused else "new"
    print(f"CA certificate:     {files.ca_cert} ({ca_note}; install it on phones and clients)")
    print(f"CA key:             {files.ca_key} (keep private)")
    print(f"server certificate: {files.server_cert} (leaf + CA chain)")
    print(f"server key:         {files.server_key}")
    print(f"SANs:               {', '.join(names)}")
    print(f"key type:           {args.key_type}")
    print(f"expires:            {_not_valid_after(leaf).strftime('%Y-%m-%d %H:%M UTC')}")
    print()
    print("check with:")
    print(f"  openssl verify -CAfile {files.ca_cert} {files.server_cert}")
    # SNI carries only DNS names, so an IP-only certificate gets no -servername.
    target = first_dns or names[0]
    sni = f" -servername {first_dns}" if first_dns else ""
    print(f"  openssl s_client -connect {_host_port(target)} -CAfile {files.ca_cert}{sni}")
    return 0


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``warden-pbx cert client``."""
    parser.add_argument("extension", metavar="EXTENSION", help="the extension the phone registers as (the CN)")
    parser.add_argument("--out-dir", type=Path, default=Path("certs"),
                        help="directory holding ca.crt/ca.key; client-EXT.crt/.key are written there (default: ./certs)")
    parser.add_argument("--domain", default="localhost", help="host part of the sip:EXT@DOMAIN SAN (default: localhost)")
    parser.add_argument("--key-type", choices=KEY_TYPES, default="ecdsa-p256", help="key type (default: ecdsa-p256)")
    parser.add_argument("--days", type=int, default=825, help="validity (default: 825)")
    parser.add_argument("--force", action="store_true", help="replace an existing client certificate")


def run_client(args: argparse.Namespace) -> int:
    """``warden-pbx cert client``: 0 on success, 1 on CertificateError."""
    try:
        cert, key = generate_client(args.out_dir, args.extension, domain=args.domain, key_type=args.key_type,
                                    days=args.days, force=args.force)
    except CertificateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"client certificate: {cert} (CN {args.extension}, SAN sip:{args.extension}@{args.domain})")
    print(f"client key:         {key} (install both on the phone)")
    return 0


def _host_port(host: str) -> str:
    """``host:5061`` (the SIPS port), bracketing IPv6 literals."""
    return f"[{host}]:5061" if ":" in host else f"{host}:5061"


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``tools/generate_ssl_cert.py``)."""
    parser = argparse.ArgumentParser(
        prog="generate_ssl_cert",
        description="Create a local CA and a TLS server certificate for Warden PBX.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

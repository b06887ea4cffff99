"""TLS: reading `server.tls` and `upstreams.NAME.tls`, and the SSL contexts they make.

The files are read when the configuration is, so a certificate that does
not load, or does not match its key, is a configuration error at start and
on reload (where the running configuration then keeps serving).

TLS 1.0 and 1.1 are never offered (RFC 8996); 1.2 is the default floor.
"""
from __future__ import annotations

import datetime
import ssl
from typing import Any

from cryptography import x509

from .model import ServerTls, UpstreamTls
from .reader import Reader

VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
CLIENT_AUTH = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
EXPIRY_WARNING = datetime.timedelta(days=14)


class ResumingContext(ssl.SSLContext):
    """A client context for one upstream target that offers the TLS session of its last connection, so that a
    new pooled connection resumes it instead of making a full handshake. asyncio and uvloop make each
    connection's TLS object through `wrap_bio`, which is where the session goes in."""

    session: ssl.SSLSession | None = None

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, server_side: bool = False,
                 server_hostname: str | bytes | None = None, session: ssl.SSLSession | None = None
                 ) -> ssl.SSLObject:
        return super().wrap_bio(incoming, outgoing, server_side, server_hostname, session=session or self.session)


def _no_password() -> bytes:
    raise ValueError("the key is encrypted: give the gateway an unencrypted key file (readable by it alone)")


def server_context(cert_file: str, key_file: str, *, min_version: str = "1.2", ciphers: str | None = None,
                   client_ca_file: str | None = None, client_auth: str = "none") -> ssl.SSLContext:
    """Raises OSError (a file), ssl.SSLError (its content) or ValueError (an encrypted key)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = VERSIONS[min_version]
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    if ciphers:
        context.set_ciphers(ciphers)
    context.load_cert_chain(cert_file, key_file, password=_no_password)  # never a prompt on the terminal
    if client_ca_file:
        context.load_verify_locations(cafile=client_ca_file)
    context.verify_mode = CLIENT_AUTH[client_auth]
    return context


def upstream_context(tls: UpstreamTls) -> ResumingContext:
    context = ResumingContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.ca_file:
        context.load_verify_locations(cafile=tls.ca_file)
    else:
        context.load_default_certs()
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.cert_file and tls.key_file:
        context.load_cert_chain(tls.cert_file, tls.key_file, password=_no_password)
    return context


def expiry_warning(cert_file: str, where: str, now: datetime.datetime | None = None) -> str | None:
    """A warning when the first certificate of `cert_file` expires within 14 days, or has."""
    with open(cert_file, "rb") as fh:
        cert = x509.load_pem_x509_certificate(fh.read())
    now = now or datetime.datetime.now(datetime.timezone.utc)
    left = cert.not_valid_after_utc - now
    if left <= datetime.timedelta(0):
        return f"{where}: the certificate EXPIRED on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    if left <= EXPIRY_WARNING:
        return (f"{where}: the certificate expires in {left.days} day(s), on "
                f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    return None


def _why(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError):
        return f"{exc.filename or ''}: {exc.strerror}".lstrip(": ")
    return str(exc)


def server_tls(reader: Reader, raw: Any) -> ServerTls | None:
    if raw is None:
        return None
    where = "server.tls"
    block = reader.section(raw, where, {"cert_file", "key_file", "min_version", "ciphers", "client_ca_file",
                                        "client_auth"})
    cert_file = reader.string(block, "cert_file", where, None)
    key_file = reader.string(block, "key_file", where, None)
    for key, value in (("cert_file", cert_file), ("key_file", key_file)):
        if not value:
            reader.problem(f"{where}.{key}", "is required: a PEM file")
    min_version = str(block.get("min_version", "1.2"))
    if min_version not in VERSIONS:
        reader.problem(f"{where}.min_version", f"must be 1.2 or 1.3 (TLS 1.0 and 1.1 are not offered), got "
                                               f"{block.get('min_version')!r}")
        min_version = "1.2"
    ciphers = reader.string(block, "ciphers", where, None)
    if ciphers:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(ciphers)
        except ssl.SSLError:
            reader.problem(f"{where}.ciphers", f"OpenSSL knows no cipher in {ciphers!r}")
            ciphers = None
    client_ca_file = reader.string(block, "client_ca_file", where, None)
    client_auth = reader.choice(block, "client_auth", where, tuple(CLIENT_AUTH))
    if client_auth != "none" and not client_ca_file:
        reader.problem(f"{where}.client_auth", f"{client_auth} needs client_ca_file: the CA that signs client "
                                               "certificates")
    if client_ca_file and client_auth == "none":
        reader.problem(f"{where}.client_ca_file", "is set, but client_auth is none: set it to optional or required")
    if not cert_file or not key_file:
        return None
    try:
        context = server_context(cert_file, key_file, min_version=min_version, ciphers=ciphers,
                                 client_ca_file=client_ca_file, client_auth=client_auth)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        reader.problem(where, f"the certificate, key or CA file does not load: {_why(exc)}")
        return None
    _warn_expiry(reader, cert_file, f"{where}.cert_file")
    return ServerTls(cert_file=cert_file, key_file=key_file, context=context, min_version=min_version,
                     ciphers=ciphers, client_ca_file=client_ca_file, client_auth=client_auth)


def upstream_tls(reader: Reader, raw: Any, where: str) -> UpstreamTls:
    where = f"{where}.tls"
    block = reader.section(raw, where, {"ca_file", "verify", "server_name", "cert_file", "key_file"})
    tls = UpstreamTls(
        ca_file=reader.string(block, "ca_file", where, None),
        verify=reader.boolean(block, "verify", where, True),
        server_name=reader.string(block, "server_name", where, None),
        cert_file=reader.string(block, "cert_file", where, None),
        key_file=reader.string(block, "key_file", where, None),
    )
    if bool(tls.cert_file) != bool(tls.key_file):
        reader.problem(where, "cert_file and key_file go together: a client certificate and its key")
        return tls
    if raw is None:
        return tls
    try:
        upstream_context(tls)
    except (OSError, ValueError) as exc:
        reader.problem(where, f"the CA file, certificate or key does not load: {_why(exc)}")
        return tls
    if not tls.verify:
        reader.warn(f"{where}.verify is off: the upstream's certificate and name are not checked, so anyone "
                        "on the path can read the tokens and answers")
    if tls.cert_file:
        _warn_expiry(reader, tls.cert_file, f"{where}.cert_file")
    return tls


def _warn_expiry(reader: Reader, cert_file: str, where: str) -> None:
    try:
        warning = expiry_warning(cert_file, where)
    except (OSError, ValueError):
        return  # it loaded as a chain; a first certificate cryptography cannot read has no date to warn of
    if warning:
        reader.warn(warning)

"""TLS contexts for the doors and for outgoing connections, and certificate reload.

One ``ServerTls`` per purpose holds an ``ssl.SSLContext`` that listeners are
given once; renewing a certificate re-loads the files into the *same*
context (``load_cert_chain`` again), so new handshakes use the new
certificate with no restart and no listener rebuilt. ``Jobs`` calls
``reload_if_changed`` every ``VETHUB_TLS_RELOAD_SECONDS``.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from pathlib import Path

import certifi

from hub.config import Settings
from hub.errors import HubError

log = logging.getLogger("hub.tls")


class TlsConfigError(HubError):
    """The TLS settings name files that cannot be used (the message says which and why)."""


def _stamp(paths: list[Path]) -> tuple[tuple[int, int], ...]:
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((0, 0))
    return tuple(out)


class ServerTls:
    """A server context over the hub's certificate, optionally requiring client certificates."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._lock = threading.Lock()
        self._stamp: tuple[tuple[int, int], ...] = ()
        self.load()
        if client_ca is not None:
            self.context.verify_mode = ssl.CERT_REQUIRED

    def _files(self) -> list[Path]:
        return [self.cert, self.key] + ([self.client_ca] if self.client_ca else [])

    def load(self) -> None:
        """(Re-)read the files into the live context; raises ``TlsConfigError`` naming the fault."""
        with self._lock:
            stamp = _stamp(self._files())
            try:
                # The pair is tried on a scratch context first: a key that does not
                # match fails only after OpenSSL has put the new certificate into
                # the context, which would leave the live one unable to handshake.
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(self.cert, self.key)
                self.context.load_cert_chain(self.cert, self.key)
            except (OSError, ssl.SSLError) as exc:
                raise TlsConfigError(
                    f"cannot use certificate {self.cert} with key {self.key}: {exc}"
                ) from exc
            if self.client_ca is not None:
                try:
                    self.context.load_verify_locations(cafile=self.client_ca)
                except (OSError, ssl.SSLError) as exc:
                    raise TlsConfigError(f"cannot use client CA {self.client_ca}: {exc}") from exc
            self._stamp = stamp

    def reload_if_changed(self) -> bool:
        """Re-read the files when they changed on disk; a broken new file keeps the old one."""
        if _stamp(self._files()) == self._stamp:
            return False
        try:
            self.load()
        except TlsConfigError as exc:
            log.error("TLS certificate not reloaded; still using the previous one: %s", exc)
            return False
        log.info("TLS certificate reloaded", extra={"cert": str(self.cert)})
        return True


class HubTls:
    """The hub's server contexts: ``plain`` (HTTPS, HL7 over TLS) and ``dicom``
    (which also requires client certificates when ``VETHUB_TLS_CLIENT_CA`` is set)."""

    def __init__(self, settings: Settings) -> None:
        if not settings.tls_cert or not settings.tls_key:
            raise TlsConfigError("VETHUB_TLS_CERT and VETHUB_TLS_KEY must both be set for TLS")
        self.plain = ServerTls(settings.tls_cert, settings.tls_key)
        self.dicom = (
            ServerTls(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
            if settings.tls_client_ca
            else self.plain
        )

    def reload_if_changed(self) -> None:
        self.plain.reload_if_changed()
        if self.dicom is not self.plain:
            self.dicom.reload_if_changed()


def server_tls(settings: Settings) -> HubTls | None:
    """The hub's TLS, or None when no certificate is configured (a half-set pair is an error)."""
    if not settings.tls_cert and not settings.tls_key:
        if settings.dicom_tls_port is not None or settings.hl7_tls_port is not None:
            raise TlsConfigError(
                "VETHUB_DICOM_TLS_PORT / VETHUB_HL7_TLS_PORT need "
                "VETHUB_TLS_CERT and VETHUB_TLS_KEY"
            )
        return None
    return HubTls(settings)


def client_context(settings: Settings) -> ssl.SSLContext:
    """For outgoing TLS (webhooks, HL7, DICOM): the usual public CAs plus ``VETHUB_TLS_EXTRA_CA``.

    Certificates are always verified, host names too; a clinic with its own CA
    adds it rather than switching checks off.
    """
    ctx = ssl.create_default_context(cafile=certifi.where())
    if settings.tls_extra_ca is not None:
        try:
            ctx.load_verify_locations(cafile=settings.tls_extra_ca)
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(
                f"cannot use VETHUB_TLS_EXTRA_CA {settings.tls_extra_ca}: {exc}"
            ) from exc
    return ctx

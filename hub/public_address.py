"""The address the hub's links point at, and whether other machines can open it.

Viewer URLs, share links and results sent to the practice software all start
with ``public_url``. Left unset it is derived from the HTTP door's host and
port, because a fixed default (the old ``http://127.0.0.1:8080``) silently
pointed every link at the wrong port or at the sender's own machine.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from hub.config import Settings

WILDCARDS = ("0.0.0.0", "::", "")
# A documentation address (RFC 5737): "connecting" a UDP socket to it sends
# nothing, it only makes the kernel pick the interface the default route uses.
_ROUTE_PROBE = "192.0.2.1"


def derive(host: str, port: int, tls: bool) -> str:
    """``http(s)://<host>:<port>``; a wildcard bind names this machine's primary address."""
    scheme = "https" if tls else "http"
    name = primary_address() if host in WILDCARDS else host
    if ":" in name and not name.startswith("["):
        name = f"[{name}]"  # an IPv6 literal in a URL
    return f"{scheme}://{name}:{port}"


def primary_address() -> str:
    """The IPv4 address other machines on the LAN most likely reach this one at.

    An address rather than the host name: clinic networks rarely have a DNS
    that knows the hub's name, and the devices are set up with an address too.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((_ROUTE_PROBE, 9))
            address = str(probe.getsockname()[0])
    except OSError:  # no route at all: the name is the best left
        return socket.gethostname()
    return address


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1: an address only this machine can use."""
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def warnings(settings: Settings, http_port: int) -> list[str]:
    """Why links the hub sends, or its HTTP door, may not work from another machine.

    ``http_port`` is the bound port (``settings.http_port`` may be 0). A public
    URL without a port, or with another scheme than the hub's own, is taken to
    be a reverse proxy's address, and its port is not compared.
    """
    found: list[str] = []
    tls = settings.tls_cert is not None
    own_scheme = "https" if tls else "http"
    link = urlsplit(settings.public_url)
    link_host = link.hostname or ""
    if is_loopback(settings.http_host):
        found.append(
            f"HTTP listens on {settings.http_host} only: the practice software and the "
            "vets' PCs cannot reach the API, console or viewer; for a clinic set "
            'http_host = "0.0.0.0" in vethub.toml (or VETHUB_HTTP_HOST)'
        )
    if is_loopback(link_host):
        found.append(
            f"links the hub sends (viewer_url, shares, results to the practice software) "
            f"start with {settings.public_url}, which only this machine can open; set "
            "public_url to the address other machines use (vethub.toml or VETHUB_PUBLIC_URL)"
        )
    proxied = link.port is None or link.scheme != own_scheme
    if not proxied and link.port != http_port:
        found.append(
            f"public_url {settings.public_url} names port {link.port} but HTTP listens on "
            f"{http_port}: links will not reach the hub unless a proxy or port mapping "
            "forwards that port"
        )
    if tls and link.scheme == "http" and link.port == http_port:
        found.append(
            f"public_url {settings.public_url} is plain http but the hub serves HTTPS only: "
            "links will fail; make it https://"
        )
    return found

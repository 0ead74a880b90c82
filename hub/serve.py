"""``vethub serve``: one process, three doors (HTTP, DICOM, HL7), one lifespan.

uvicorn runs the asyncio loop; the FastAPI lifespan starts the other doors
and stops them in reverse order, so Ctrl-C / SIGTERM finish in-flight work.
With ``VETHUB_TLS_CERT``/``VETHUB_TLS_KEY`` the HTTP door speaks HTTPS only,
on the hub's live context (hub/tls.py), so a renewed certificate is used by
the next connection without a restart.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol

import uvicorn
from fastapi import APIRouter, FastAPI

from adapters import ezyvet, provet, upstream_mwl, webhook
from adapters.hl7 import rest as hl7_rest
from adapters.hl7 import sender as hl7_sender
from adapters.hl7.server import Hl7Door
from hub import doctor, public_address
from hub.api.app import Lifespan, create_app
from hub.api.limits import header_deadline
from hub.config import Settings
from hub.context import Hub
from hub.jobs import Jobs
from hub.logs import setup_logging
from hub.services import keys, users
from hub.services.deliveries.kinds import Registry
from hub.services.deliveries.worker import DeliveryWorker
from hub.services.source_kinds import SourceKinds
from hub.tls import HubTls, TlsConfigError, client_context
from worklist import forward
from worklist import rest as dicom_rest
from worklist.echo import echo
from worklist.server import DicomDoor

log = logging.getLogger("hub.serve")


class Door(Protocol):
    """A listener the hub opens besides HTTP (DICOM, HL7)."""

    name: str
    # The bound TLS port once started; None while that listener is off.
    tls_port: int | None

    async def start(self) -> int:
        """Start listening; return the bound port."""
        ...

    async def stop(self) -> None:
        """Stop accepting, let work in flight finish (bounded), release the port."""
        ...


def build_doors(hub: Hub) -> list[Door]:
    return [DicomDoor(hub), Hl7Door(hub)]


def edge_routers() -> list[APIRouter]:
    """HTTP routes that belong to an adapter (they speak its wire format)."""
    return [hl7_rest.router, dicom_rest.router, ezyvet.router, provet.router]


def delivery_kinds() -> Registry:
    """What the hub can send back to practice software; each kind is declared by its adapter."""
    return Registry(
        [
            webhook.KIND,
            hl7_sender.ORU,
            hl7_sender.ORM_STATUS,
            forward.KIND,
            *upstream_mwl.DELIVERY_KINDS,
            *ezyvet.DELIVERY_KINDS,
            *provet.DELIVERY_KINDS,
        ]
    )


def source_kinds() -> SourceKinds:
    """The vendor adapters a source may be of (besides hl7); each declares its kind."""
    return SourceKinds([upstream_mwl.SOURCE_KIND, ezyvet.SOURCE_KIND, provet.SOURCE_KIND])


def adapter_jobs(jobs: Jobs, hub: Hub) -> None:
    """Timed work that belongs to an adapter (an upstream worklist's poll)."""
    upstream_mwl.schedule(jobs, hub)


def build_app(hub: Hub, lifespan: Lifespan | None = None, kinds: Registry | None = None) -> FastAPI:
    """The whole HTTP API: the core's routers plus the adapters'. Tests build it here too.

    ``app.state.delivery_kinds`` is the one registry the sources API, the
    deliveries API and the delivery worker all ask; ``app.state.source_kinds``
    the one the sources API checks a source's ``kind`` against.
    """
    app = create_app(hub, lifespan=lifespan, edge_routers=edge_routers())
    app.state.delivery_kinds = kinds if kinds is not None else delivery_kinds()
    app.state.source_kinds = source_kinds()
    return app


def http_ports(port: int, tls: bool) -> dict[str, int | None]:
    """``http`` for plain HTTP; ``https`` (and ``http`` null) when HTTPS replaces it."""
    return {"http": None, "https": port} if tls else {"http": port}


def door_ports(door: Door, port: int) -> dict[str, int | None]:
    """A started door's entries: ``name``, plus ``name_tls`` only when its TLS listener is open."""
    ports: dict[str, int | None] = {door.name: port}
    if door.tls_port is not None:
        ports[f"{door.name}_tls"] = door.tls_port
    return ports


def ready_line(settings: Settings, ports: dict[str, int | None]) -> str:
    scheme = "https" if ports.get("https") else "http"
    # A wildcard bind is shown as the address other machines use.
    url = public_address.derive(settings.http_host, ports[scheme] or 0, scheme == "https")
    line = f"vethub ready: {scheme} {url}  dicom {settings.dicom_ae}@{ports['dicom']}"
    if ports.get("dicom_tls"):
        line += f"  dicom-tls {settings.dicom_ae}@{ports['dicom_tls']}"
    line += f"  hl7 {ports['hl7']}"
    if ports.get("hl7_tls"):
        line += f"  hl7-tls {ports['hl7_tls']}"
    return line


def write_ports(data_dir: Path, ports: dict[str, int | None]) -> None:
    tmp = data_dir / "ports.json.tmp"
    tmp.write_text(json.dumps(ports))
    os.replace(tmp, data_dir / "ports.json")


def doctor_probes(settings: Settings) -> doctor.Probes:
    """``vethub doctor``'s DICOM probe: the C-ECHO of ``POST /api/v1/modalities/{ae}/echo``."""

    def call(ae_title: str, host: str, port: int, tls: bool) -> tuple[bool, str]:
        ctx = client_context(settings) if tls else None
        result = echo(settings.dicom_ae, ae_title, host, port, timeout=doctor.TIMEOUT_S, tls=ctx)
        return result.ok, result.detail

    return doctor.Probes(echo=call)


def bootstrap_admin(hub: Hub) -> str | None:
    """Make the bootstrap key exist, or create an admin key on first start.

    Runs at every start, so it only ever adds a key while no admin key and no
    admin account exist (``vethub init`` makes an account, who signs in and
    makes keys): a revoked bootstrap key stays revoked (``keys.ensure`` warns
    about it). Returns a newly created key (to print once), else None.
    """
    with hub.db.session() as s:
        if hub.settings.bootstrap_admin_key:
            keys.ensure(s, "bootstrap-admin", "admin", hub.settings.bootstrap_admin_key)
            return None
        if keys.any_admin(s) or users.any_admin(s):
            return None
        _, plain = keys.create(s, "first-admin", "admin", actor="system:first-start")
        return plain


def bind_http(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def make_lifespan(hub: Hub, doors: list[Door], http_port: int) -> Lifespan:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started: list[Door] = []
        worker = None  # results deliveries to practice software (hub/services/deliveries/)
        jobs = None  # timed work (hub/jobs.py): quiet-period completion, ...
        ports = {**http_ports(http_port, hub.tls is not None), "dicom": None, "hl7": None}
        try:
            for door in doors:
                ports.update(door_ports(door, await door.start()))
                started.append(door)
            jobs = Jobs(hub)
            adapter_jobs(jobs, hub)
            jobs.start()
            worker = DeliveryWorker(hub.db, hub.settings, app.state.delivery_kinds)
            worker.start()
            write_ports(hub.settings.data_dir, ports)
            # The ~200,000 objects of start-up (modules, pydicom's dictionaries,
            # routes) live as long as the process: out of the collector's view,
            # a full collection no longer walks them (65-92 ms pauses seen on
            # every dozenth large DICOMweb search, docs/performance.md).
            gc.freeze()
            app.state.ready = True
            log.info("vethub listening", extra={"ports": ports, "ae_title": hub.settings.dicom_ae})
            print(ready_line(hub.settings, ports), file=sys.stdout, flush=True)
            yield
        finally:
            app.state.ready = False
            if jobs is not None:
                await asyncio.to_thread(jobs.stop)
            if worker is not None:
                await asyncio.to_thread(worker.stop)
            for door in reversed(started):
                try:
                    await door.stop()
                except Exception:
                    log.exception("door did not stop cleanly", extra={"door": door.name})
            hub.close()
            log.info("vethub stopped")

    return lifespan


def use_tls(config: uvicorn.Config, tls: HubTls | None) -> None:
    """Make uvicorn serve HTTPS with the hub's own live context.

    uvicorn would build a context of its own from file paths, which a reload
    of ours could not reach. ``Server`` loads a config only if it is not
    loaded yet and hands ``config.ssl`` to ``create_server`` for our socket,
    so loading here and setting ``ssl`` serves every handshake from ``tls``
    (works on every uvicorn we allow; ``ssl_context_factory`` needs 0.47).
    """
    if tls is None:
        return
    config.load()
    config.ssl = tls.plain.context


def open_hub(settings: Settings) -> Hub:
    """The hub, or exit 2 with one line when its TLS files cannot be used.

    The extra CA is checked here too: unreadable, it would otherwise surface
    only when the delivery worker starts, after the doors are open.
    """
    try:
        client_context(settings)
        return Hub.open(settings, upgrade=settings.auto_migrate)
    except TlsConfigError as exc:
        print(f"vethub: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def serve(settings: Settings) -> None:
    setup_logging(settings.log_level)
    hub = open_hub(settings)
    created = bootstrap_admin(hub)
    if created:
        print(
            f"Created an admin API key (shown only now, keep it safe): {created}",
            file=sys.stdout,
            flush=True,
        )
    sock = bind_http(settings.http_host, settings.http_port)
    http_port = sock.getsockname()[1]
    if settings.public_url_derived:  # with the port bound (http_port 0 picks one)
        settings.public_url = public_address.derive(
            settings.http_host, http_port, hub.tls is not None
        )
    for warning in public_address.warnings(settings, http_port):
        log.warning(warning, extra={"public_url": settings.public_url})
    app = build_app(hub, lifespan=make_lifespan(hub, build_doors(hub), http_port))
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
        lifespan="on",
        http=header_deadline(settings.http_header_timeout_seconds),
        limit_concurrency=settings.http_max_connections,
    )
    use_tls(config, hub.tls)
    uvicorn.Server(config).run(sockets=[sock])

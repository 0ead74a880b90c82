"""The FastAPI application: routers, error handling, health and metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

import hub
from hub.api import (
    admin,
    annotation,
    apidocs,
    deliveries,
    errors,
    health,
    messages,
    ohif,
    oidc,
    orders,
    peers,
    qc,
    routes,
    shared,
    shares,
    signin,
    sources,
    storage,
    studies,
    users,
    viewer,
)
from hub.api.limits import HttpBounds
from hub.console import pages as console
from hub.context import Hub
from hub.dicomweb import mount as mount_dicomweb
from hub.metrics import DatabaseGauges, HttpMetrics

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


@asynccontextmanager
async def _no_doors(app: FastAPI) -> AsyncIterator[None]:
    app.state.ready = True
    yield


def create_app(
    hub_ctx: Hub, lifespan: Lifespan | None = None, edge_routers: Sequence[APIRouter] = ()
) -> FastAPI:
    """The HTTP API of the core; ``edge_routers`` are the adapters' own (wired in hub.serve)."""
    app = FastAPI(
        title="vethub",
        version=hub.__version__,
        summary="Imaging integration hub for veterinary clinics",
        lifespan=lifespan or _no_doors,
        # Served by hub.api.apidocs from the package, not from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.hub = hub_ctx
    app.state.ready = False
    # This hub's database gauges; the process-wide counters stay in the default registry.
    app.state.gauges = DatabaseGauges(hub_ctx.db, hub_ctx.settings.worklist_max_age_days)
    gauges = CollectorRegistry(auto_describe=False)
    gauges.register(app.state.gauges)
    errors.install(app)
    # Inside the metrics middleware, so refused requests are counted too.
    max_body = int(hub_ctx.settings.http_max_body_mb * 1024 * 1024)
    app.add_middleware(HttpBounds, max_body=max_body)
    app.add_middleware(HttpMetrics)
    app.include_router(health.router)
    app.include_router(apidocs.router)
    app.include_router(orders.router)
    app.include_router(shares.router)
    app.include_router(annotation.router)
    app.include_router(viewer.router)
    app.include_router(ohif.router)
    app.include_router(shared.router)
    app.include_router(signin.router)
    app.include_router(oidc.router)
    app.include_router(console.router)
    app.include_router(users.router)
    # Before admin and sources: /modalities/{ae_title} would take "unknown" as a title.
    app.include_router(peers.router)
    app.include_router(admin.router)
    app.include_router(messages.router)
    app.include_router(sources.router)
    app.include_router(deliveries.router)
    app.include_router(qc.router)
    app.include_router(studies.router)
    app.include_router(storage.router)
    app.include_router(routes.router)
    mount_dicomweb(app, hub_ctx.settings.dicomweb_cors_origins)
    for router in edge_routers:
        app.include_router(router)

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    def metrics() -> Response:
        body = generate_latest(REGISTRY) + generate_latest(gauges)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return app

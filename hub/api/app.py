"""The FastAPI application: routers, error handling, health and metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import hub
from hub.api import (
    admin,
    annotation,
    deliveries,
    errors,
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
from hub.metrics import HttpMetrics

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
    )
    app.state.hub = hub_ctx
    app.state.ready = False
    errors.install(app)
    # Inside the metrics middleware, so refused requests are counted too.
    max_body = int(hub_ctx.settings.http_max_body_mb * 1024 * 1024)
    app.add_middleware(HttpBounds, max_body=max_body)
    app.add_middleware(HttpMetrics)
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

    @app.get("/health", tags=["ops"])
    def health(request: Request) -> JSONResponse:
        if not request.app.state.ready:
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app

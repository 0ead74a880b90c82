"""DICOMweb (PS3.18) on the hub: QIDO-RS search, WADO-RS retrieve, STOW-RS store.

It is the viewer's only data path and open to any DICOMweb client
(docs/interface.md "DICOMweb"). The same routes are mounted twice: at
``/dicomweb`` for keys and staff sessions, and at ``/shared/{token}/dicomweb``
where a share link opens its one study and nothing else (``access.py``).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from hub.dicomweb import qido, stow, wado

SHARED_PREFIX = "/shared/{token}/dicomweb"


def mount(app: FastAPI, cors_origins: list[str]) -> None:
    for router in (qido.router, wado.router, stow.router):
        app.include_router(router, prefix="/dicomweb")
        app.include_router(router, prefix=SHARED_PREFIX, include_in_schema=False)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Accept", "Content-Type"],
            expose_headers=["Content-Type", "Content-Length", "Warning"],
        )

"""The OpenAPI pages, served from the hub itself so they work without internet.

FastAPI's own ``/docs`` loads Swagger UI from a CDN; a clinic's network often
has no way out. The Swagger UI files are pinned in web/package-lock.json and
copied under /console/static/vendor/ by ``make web-assets``. ReDoc (not
vendored: its bundle drags in a React tree) answers with a redirect to ``/docs``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse

ASSETS = "/console/static/vendor/swagger-ui"
# No favicon request and no validator badge (the default badge calls validator.swagger.io).
_NO_FAVICON = "data:,"

router = APIRouter(include_in_schema=False)


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    app = request.app
    root = request.scope.get("root_path", "")  # behind a proxy that serves the hub under a path
    return get_swagger_ui_html(
        openapi_url=f"{root}{app.openapi_url}",
        title=f"{app.title} API",
        swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
        swagger_favicon_url=_NO_FAVICON,
        swagger_ui_parameters={"validatorUrl": None},
    )


@router.get("/redoc")
def redoc(request: Request) -> RedirectResponse:
    return RedirectResponse(f"{request.scope.get('root_path', '')}/docs", status_code=307)

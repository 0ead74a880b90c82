"""The stock OHIF build on disk, served under the hub's own paths.

``make viewer-assets`` unpacks ``@ohif/app``'s prebuilt ``dist/`` into
``hub/viewer_assets/ohif`` (docs/viewer.md). OHIF is compiled for the site
root: webpack's public path is ``"/"`` and ``index.html`` links ``/...``. The
hub serves the files once, under ``ASSET_PREFIX``, for every viewer (staff
and each share): the chunks are the same code for all, so a browser caches
them once. Per request only three things differ and are generated here: the
``index.html`` of a scope (its links moved under ``ASSET_PREFIX``, its config
script, the hub's own script), that scope's ``app-config.js``, and the
Content-Security-Policy carrying the hashes of the page's inline scripts.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import mimetypes
import re
from functools import lru_cache
from pathlib import Path

from fastapi.responses import FileResponse, Response

import hub

OHIF_DIR = Path(hub.__file__).resolve().parent / "viewer_assets" / "ohif"
ASSET_PREFIX = "/viewer/ohif/"
HUB_SCRIPT = "/viewer/static/vethub-ohif.js"
INSTALL_HINT = "make viewer-assets"

# webpack's public path as compiled into the app bundle and its workers.
_PUBLIC_PATH = b'__webpack_require__.p = "/";'
_HASHED = re.compile(r"(^|/)[^/]*[.-][0-9a-f]{16}\.[a-z0-9]+$|(^|/)[0-9a-f]{16}\.wasm$")
_COMPRESSIBLE = frozenset({".js", ".css", ".json", ".svg", ".wasm", ".html", ".map", ".txt"})
# What the viewer never needs from us: the stock config (the hub generates its
# own), the service worker (a cache of patient images on the device), the
# page itself (only per scope, below).
_NOT_SERVED = frozenset(
    {"index.html", "app-config.js", "sw.js", "init-service-worker.js", "_headers", "_redirects"}
)
# Larger files (ONNX runtimes for AI tools the viewer does not use) are sent
# from disk as they are rather than held in memory.
_MAX_HELD = 24 * 1024 * 1024
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)
# The webpack chunks OHIF 3.13.2 loads, one after another, before it asks for the
# first image (its code, styles; `scripts/viewer_speed.py --chunks` lists them
# from Chromium's resource timings). ``index.html`` preloads them so that, cold,
# they download while the 17 MB app bundle compiles rather than after it. A new
# OHIF build has new chunks: re-list them (tests/test_viewer_ohif.py checks that
# each one is on disk).
FIRST_CHUNKS = (
    "89", "100", "781", "899", "1180", "1206", "1483", "1673", "2623", "2779", "3500",
    "3760", "3833", "4683", "5406", "5448", "5696", "5910", "6214", "6489", "6495",
    "6749", "6938", "7248", "7463", "7499", "8478", "8492", "9068", "9116", "9290",
    "9383", "9415",
)  # fmt: skip

MIME = {".wasm": "application/wasm", ".js": "text/javascript", ".mjs": "text/javascript"}


def installed() -> bool:
    return (OHIF_DIR / "index.html").is_file()


def app_config(app_base: str, dicomweb_root: str, *, show_study_list: bool) -> str:
    """The ``window.config`` of one viewer scope: the hub's DICOMweb at
    ``dicomweb_root`` (same origin, so the session cookie or the share path
    authenticates it), OHIF's router under ``app_base``."""
    config = {
        "routerBasename": app_base,
        "extensions": [],
        "modes": [],
        # No guided tour popping over the first image a vet opens.
        "customizationService": {"ohif.tours": {"$set": []}},
        "showStudyList": show_study_list,
        "maxNumberOfWebWorkers": 3,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "groupEnabledModesFirst": True,
        "investigationalUseDialog": {"option": "never"},
        # Measurements are saved with the study as they are made (hub script):
        # no "track measurements for this series?" prompt, no unsaved-work prompts.
        "measurementTrackingMode": "simplified",
        "disableConfirmationPrompts": True,
        "maxNumRequests": {"interaction": 100, "thumbnail": 5, "prefetch": 25},
        "showErrorDetails": "production",
        "defaultDataSourceName": "vethub",
        "dataSources": [
            {
                "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
                "sourceName": "vethub",
                "configuration": {
                    "friendlyName": "vethub",
                    "name": "vethub",
                    "qidoRoot": dicomweb_root,
                    "wadoRoot": dicomweb_root,
                    "wadoUriRoot": dicomweb_root,
                    "qidoSupportsIncludeField": True,
                    "imageRendering": "wadors",
                    "thumbnailRendering": "wadors",
                    "enableStudyLazyLoad": True,
                    "supportsFuzzyMatching": False,
                    "supportsWildcard": True,
                    "staticWado": False,
                    "singlepart": "bulkdata,video",
                    "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
                    "omitQuotationForMultipartRequest": True,
                },
            }
        ],
    }
    return "window.config = " + json.dumps(config, indent=1) + ";\n"


@lru_cache(maxsize=1)
def _stock_index(mtime: float) -> str:
    return (OHIF_DIR / "index.html").read_text(encoding="utf-8")


def index_html(app_base: str, meta: dict[str, str]) -> tuple[str, list[str]]:
    """OHIF's ``index.html`` for the scope at ``app_base``, and the sha256 hashes
    (CSP form) of its inline scripts. ``meta`` becomes ``<meta name=...>`` tags
    the hub's script reads (study, CSRF token, what it may do)."""
    doc = _stock_index((OHIF_DIR / "index.html").stat().st_mtime)
    doc = doc.replace('window.PUBLIC_URL="/"', f'window.PUBLIC_URL="{ASSET_PREFIX}"')
    doc = re.sub(r'<script[^>]*src="/init-service-worker\.js"[^>]*></script>', "", doc)
    doc = re.sub(r'(href|src)="/(?!/)', rf'\1="{ASSET_PREFIX}', doc)
    doc = doc.replace(f'src="{ASSET_PREFIX}app-config.js"', f'src="{app_base}/app-config.js"')
    doc = re.sub(r'<link rel="manifest"[^>]*>', "", doc)  # not an installable app here
    tags = "".join(
        f'<meta name="{_attr(name)}" content="{_attr(value)}">' for name, value in meta.items()
    )
    tags += "".join(
        f'<link rel="preload" href="{ASSET_PREFIX}{name}" as="{_PRELOAD_AS[Path(name).suffix]}">'
        for name in _first_chunk_files(OHIF_DIR)
    )
    tags += f'<script defer src="{HUB_SCRIPT}"></script>'
    doc = doc.replace("</head>", tags + "</head>", 1)
    hashes = [_sha256(m.group(1)) for m in _INLINE_SCRIPT.finditer(doc)]
    return doc, hashes


_PRELOAD_AS = {".js": "script", ".css": "style"}


@lru_cache(maxsize=1)
def _first_chunk_files(folder: Path) -> list[str]:
    """The files of ``FIRST_CHUNKS`` in the build: ``<id>.bundle.<hash>.js``, ``<id>.css``."""
    found = []
    for chunk in FIRST_CHUNKS:
        found += sorted(p.name for p in folder.glob(f"{chunk}.bundle.*.js"))
        found += [f"{chunk}.css"] if (folder / f"{chunk}.css").is_file() else []
    return found


def content_security_policy(script_hashes: list[str]) -> str:
    """What OHIF needs and nothing from outside the hub: its own scripts plus the
    page's inline ones by hash, WebAssembly codecs, workers from blob: URLs,
    inline styles (React sets style attributes), images drawn into blob:/data:."""
    inline = " ".join(f"'sha256-{h}'" for h in script_hashes)
    return (
        f"default-src 'self'; script-src 'self' 'wasm-unsafe-eval' {inline}; "
        "worker-src 'self' blob:; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self' data: blob:; "
        "media-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'self'"
    )


def asset(path: str, accepts_gzip: bool) -> Response:
    """One file of the build under ``ASSET_PREFIX``: hashed names cached for a
    year, the rest for an hour; the public path moved to ``ASSET_PREFIX``."""
    file = _file(path)
    if file is None:
        return Response(status_code=404)
    suffix = file.suffix.lower()
    media = MIME.get(suffix) or mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    cache = (
        "public, max-age=31536000, immutable" if _HASHED.search(path) else "public, max-age=3600"
    )
    headers = {
        "Cache-Control": cache,
        "X-Content-Type-Options": "nosniff",
        "Vary": "Accept-Encoding",
    }
    if suffix not in _COMPRESSIBLE or file.stat().st_size > _MAX_HELD:
        return FileResponse(file, media_type=media, headers=headers)
    body, packed = _prepared(file, file.stat().st_mtime)
    if accepts_gzip:
        headers["Content-Encoding"] = "gzip"
        return Response(packed, media_type=media, headers=headers)
    return Response(body, media_type=media, headers=headers)


def _file(path: str) -> Path | None:
    if path in _NOT_SERVED or "\\" in path or path.startswith("/"):
        return None
    root = OHIF_DIR.resolve()
    try:  # NUL bytes, names too long for the file system: no such file
        file = (root / path).resolve()
        if root not in file.parents or not file.is_file():
            return None
    except (OSError, ValueError):
        return None
    return file


@lru_cache(maxsize=256)
def _prepared(file: Path, mtime: float) -> tuple[bytes, bytes]:
    """The file as served (public path and root links moved) and gzipped, once per process."""
    body = file.read_bytes()
    if file.suffix == ".js" and _PUBLIC_PATH in body:
        body = body.replace(_PUBLIC_PATH, f'__webpack_require__.p = "{ASSET_PREFIX}";'.encode())
    if file.suffix == ".css":  # fonts linked from the site root
        body = body.replace(b"url(/", f"url({ASSET_PREFIX}".encode())
    return body, gzip.compress(body, compresslevel=4, mtime=0)


def _sha256(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def _attr(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")

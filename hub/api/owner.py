"""The page an ``owner`` share link opens: a pet owner's look at the pictures on a phone.

No tools and no jargon: a banner in plain words (who, what, when, from whom),
then the images one per screen, swiped sideways (CSS scroll snapping, no
script). The plain words are hub/api/plain.py's.
"""

from __future__ import annotations

import base64
import hashlib
import html
from urllib.parse import quote

from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from hub.api.plain import describe
from hub.api.viewer import PAGE_HEADERS
from hub.models import Study
from hub.services import orders, studies

VIEWPORT = "1600,1600"  # sharp on a phone's screen at 3 device pixels per CSS pixel

CSS = """\
*{box-sizing:border-box}
html,body{margin:0;height:100%;background:#111;color:#f4f4f4;
font-family:system-ui,sans-serif;font-size:18px;line-height:1.4}
body{display:flex;flex-direction:column;height:100svh}
.banner{padding:.8rem 1rem;background:#1d2a38}
.banner h1{font-size:1.4rem;margin:0 0 .2rem}
.banner p{margin:.2rem 0}
.banner a{color:#9fd3ff;font-weight:600}
.strip{flex:1;display:flex;overflow-x:auto;overflow-y:hidden;scroll-snap-type:x mandatory;
scroll-behavior:smooth;-webkit-overflow-scrolling:touch}
.shot{flex:0 0 100%;margin:0;scroll-snap-align:center;scroll-snap-stop:always;
display:flex;flex-direction:column;min-height:0}
.shot img{flex:1;width:100%;min-height:0;object-fit:contain;background:#000}
.shot figcaption{text-align:center;padding:.4rem;color:#bbb}
.none{padding:2rem 1rem}
"""
_CSS_HASH = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
# The viewer pages' headers with this page's style sheet allowed instead.
HEADERS = {
    **PAGE_HEADERS,
    "Content-Security-Policy": (
        f"default-src 'self'; style-src 'sha256-{_CSS_HASH}'; script-src 'none'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
}


def page(s: Session, study: Study, token: str, download: str | None) -> HTMLResponse:
    """The owner page; its pictures come from the share's own DICOMweb (/rendered),
    which opens this one study only."""
    order = orders.get(s, study.order_id) if study.order_id else None
    name, lines = describe(order, study)
    base = f"/shared/{quote(token, safe='')}/dicomweb/studies/{quote(study.study_instance_uid)}"
    images = [
        f"{base}/series/{quote(series.series_instance_uid)}/instances/"
        f"{quote(i.sop_instance_uid)}/rendered?viewport={VIEWPORT}"
        for series, group in studies.series_of(s, study)
        for i in group
    ]
    banner = "".join(f"<p>{html.escape(line)}</p>" for line in lines)
    if len(images) > 1:
        banner += f"<p>{len(images)} pictures: swipe to see the next.</p>"
    if download:
        banner += (
            f'<p><a href="{html.escape(download, quote=True)}" download>'
            "Download the pictures (ZIP)</a></p>"
        )
    # The first two load at once, the rest as the owner swipes near them.
    shots = "".join(
        f'<figure class="shot"><img src="{html.escape(url, quote=True)}" '
        f'alt="Picture {n} of {len(images)}" loading="{"eager" if n <= 2 else "lazy"}">'
        f"<figcaption>{n} / {len(images)}</figcaption></figure>"
        for n, url in enumerate(images, 1)
    )
    if not shots:
        shots = '<p class="none">The pictures are not available yet.</p>'
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(name)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<style>{CSS}</style></head><body>
<header class="banner"><h1>{html.escape(name)}</h1>{banner}</header>
<main class="strip">{shots}</main></body></html>"""
    return HTMLResponse(doc, headers=HEADERS)

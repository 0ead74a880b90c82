"""/docs works on a clinic network with no way out: every file it names comes from the hub."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.harness import sqlite_api


@pytest.fixture(scope="module")
def anonymous(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with sqlite_api(tmp_path_factory.mktemp("docs"), key=None) as client:
        yield client


def test_swagger_ui_names_no_outside_address_and_its_files_are_served(
    anonymous: TestClient,
) -> None:
    page = anonymous.get("/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    assert not re.search(r"(?i)(https?:)?//[a-z0-9.-]+\.[a-z]", page.text), page.text
    named = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assets = [u for u in named if u.startswith("/")]
    assert {Path(u).name for u in assets} == {"swagger-ui-bundle.js", "swagger-ui.css"}
    for url in assets:
        r = anonymous.get(url)
        assert r.status_code == 200, f"{url}: run `make web-assets`"
        assert len(r.content) > 10_000
    assert "url: '/openapi.json'" in page.text


def test_redoc_leads_to_the_local_docs(anonymous: TestClient) -> None:
    r = anonymous.get("/redoc", follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (307, "/docs")

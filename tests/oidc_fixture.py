"""A real OpenID provider for the single sign-on tests: ``node tests/oidc/provider.js``
(the npm package ``oidc-provider``, pinned in tests/oidc/package-lock.json), and a
client that signs in at it the way a person would, without a browser.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest

from tests.harness import REPO, free_port

PROVIDER_DIR = REPO / "tests" / "oidc"
CLIENT_ID = "vethub"
CLIENT_SECRET = "vethub-test-secret"


def ensure_node_modules() -> None:
    """``npm ci`` when `make test` has not run it (or the lock file changed)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        if os.environ.get("CI"):
            pytest.fail("node and npm are needed for the single sign-on tests", pytrace=False)
        pytest.skip("no node/npm: the single sign-on tests need them")
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        subprocess.run(
            ["npm", "ci", "--prefix", str(PROVIDER_DIR), "--no-audit", "--no-fund"],
            check=True,
            capture_output=True,
        )


@dataclass
class Provider:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_provider(
    redirect_uri: str,
    roles: dict[str, object],
    log_dir: Path,
    *,
    claims_in_userinfo: bool = False,
) -> Iterator[Provider]:
    """oidc-provider on a free port with one client redirecting to ``redirect_uri``;
    ``roles`` is each login's roles claim (a login not in it has none).
    ``claims_in_userinfo`` keeps roles and names out of the ID token."""
    ensure_node_modules()
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "oidc-provider.log"
    env = {
        **os.environ,
        "PORT": str(port),
        "REDIRECT_URI": redirect_uri,
        "CLIENT_ID": CLIENT_ID,
        "CLIENT_SECRET": CLIENT_SECRET,
        "OIDC_ROLES": json.dumps(roles),
        "OIDC_CLAIMS_IN_USERINFO": "1" if claims_in_userinfo else "0",
    }
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            ["node", str(PROVIDER_DIR / "provider.js")], env=env, stdout=log, stderr=log
        )
    provider = Provider(proc, port, log_path)
    try:
        _wait_ready(provider)
        yield provider
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(provider: Provider) -> None:
    url = f"{provider.issuer}/.well-known/openid-configuration"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if provider.process.poll() is not None:
            raise RuntimeError(f"oidc-provider exited: {provider.log()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"oidc-provider did not start: {provider.log()}")


_FORM = re.compile(r'<form[^>]*action="([^"]+)"[^>]*method="post"', re.I)
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', re.I)
_ABORT = re.compile(r'<a href="([^"]+/abort)"', re.I)


def sign_in_at_provider(
    authorize_url: str, login: str, callback_prefix: str, *, cancel: bool = False
) -> str:
    """Sign in as ``login`` (any password) at the provider's login form, consent,
    and return the URL the provider sends the browser back to (the hub's
    callback, not followed). ``cancel`` presses the provider's Cancel instead."""
    with httpx.Client(timeout=10) as browser:  # the provider's cookies live here
        url = authorize_url
        resp = browser.get(url)
        for _ in range(20):
            if resp.is_redirect:
                url = urljoin(url, resp.headers["location"])
                if url.startswith(callback_prefix):
                    return url
                resp = browser.get(url)
                continue
            assert resp.status_code == 200, resp.text
            page = resp.text
            if cancel and (abort := _ABORT.search(page)):
                url = urljoin(url, html.unescape(abort.group(1)))
                resp = browser.get(url)
                continue
            form = _FORM.search(page)
            assert form is not None, page
            fields = dict(_HIDDEN.findall(page))
            if fields.get("prompt") == "login":
                fields |= {"login": login, "password": "any password"}
            url = urljoin(url, html.unescape(form.group(1)))
            resp = browser.post(url, data=fields)
        raise AssertionError(f"the provider never sent the browser back: {url}")

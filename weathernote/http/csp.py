"""The Content-Security-Policy of the GraphiQL page (GET /graphql from a browser) and its assets (/graphiql/).

Everything the page loads is a file of this server (weathernote/static/graphiql/), so the
policy names no other origin:

- default-src 'none': whatever is not listed below (objects, frames, workers, manifests,
  media) is refused.
- script-src 'self': the vendored React and GraphiQL builds and explorer.js, no inline
  script, no eval (the bundles need neither).
- style-src 'self' 'nonce-…': graphiql.min.css and explorer.css; and the one <style>
  element GraphiQL inserts itself, while a dialog or menu is open (Radix UI's scroll lock,
  react-remove-scroll-bar: `body { overflow: hidden … }`; its text depends on the scrollbar's
  width, so no hash can name it, and without it the browser reports a violation each time a
  dialog opens). It carries the nonce that explorer.js hands the bundle in the global
  `__webpack_nonce__`, read from the page, which has a new one in every response. No
  'unsafe-inline': inline style attributes stay forbidden too (GraphiQL writes none; React
  and CodeMirror set styles through the CSSOM, which a policy does not govern).
- connect-src 'self': fetch() to /graphql and the WebSocket to ws(s)://<this host>/graphql
  for subscriptions (CSP Level 3: 'self' matches ws: and wss: of the page's own host in
  current Chromium, Firefox and Safari; tests/system/test_graphiql_browser.py runs a subscription
  under it in Chromium). Naming the ws: origin outright would mean trusting the Host header.
- img-src 'self' data: / font-src 'self' data:: GraphiQL's stylesheet embeds its fonts
  (Roboto, Fira Code) and three PNG images as data: URLs; the page's favicon is `data:,`.
- frame-ancestors 'none': no other page may frame the explorer (clickjacking); only a
  header can say this, a <meta> policy cannot.
- base-uri 'none', form-action 'none': no <base> may re-point the relative asset URLs, and
  the page submits no forms.
"""

from __future__ import annotations

import secrets

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "Content-Security-Policy"
# The placeholder in weathernote/static/graphiql/index.html that each response's nonce replaces.
NONCE_PLACEHOLDER = b"__CSP_NONCE__"


def policy(nonce: str | None = None) -> str:
    """The page's policy; without a nonce (the assets, or the page under /graphiql/), GraphiQL's
    dialogs cannot insert their scroll-lock <style> and the browser reports each refusal."""
    styles = "'self'" + (f" 'nonce-{nonce}'" if nonce else "")
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            f"style-src {styles}",
            "connect-src 'self'",
            "img-src 'self' data:",
            "font-src 'self' data:",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'none'",
        )
    )


def new_nonce() -> str:
    """128 random bits, base64url: new for every response of the page."""
    return secrets.token_urlsafe(16)


def ide_page(html: bytes) -> tuple[bytes, dict[str, str]]:
    """The explorer page with a fresh nonce in it, and the headers to send it with."""
    nonce = new_nonce()
    return html.replace(NONCE_PLACEHOLDER, nonce.encode()), {HEADER: policy(nonce)}


class WithPolicy:
    """ASGI wrapper for the /graphiql/ mount: every HTTP response carries the policy (no nonce)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = policy()
            await send(message)

        try:
            await self.app(scope, receive, send_with_policy)
        except HTTPException as exc:
            # StaticFiles raises its 404 (and 405); answer it here, as Starlette would, so that
            # it carries the policy too.
            headers = {**(exc.headers or {}), HEADER: policy()}
            response: Response
            if exc.status_code in (204, 304):
                response = Response(status_code=exc.status_code, headers=headers)
            else:
                response = PlainTextResponse(exc.detail, status_code=exc.status_code, headers=headers)
            await response(scope, receive, send)

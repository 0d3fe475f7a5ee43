"""Schemathesis 4 hooks for `just api-check`: every request carries the credential its operation's
`security` names in the OpenAPI document, built per request.

- `app_signature`: `HONGBAO-HMAC-SHA256 …` over the method, the path and query, a timestamp, a
  fresh nonce and the body, computed in a requests `AuthBase` on the *prepared* request, so the
  signed bytes are exactly the bytes sent (after JSON serialization and URL encoding) and a
  retried request never reuses a nonce;
- `admin`: `Bearer` with the admin credential;
- public operations: nothing.

Environment: HB_APP_ID, HB_KEY_ID, HB_APP_SECRET, HB_ADMIN_TOKEN (the recipe reads them from the
host's data directory).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time

import requests
import schemathesis

APP_ID = os.environ["HB_APP_ID"]
KEY_ID = os.environ["HB_KEY_ID"]
APP_SECRET = os.environ["HB_APP_SECRET"].encode()
ADMIN_TOKEN = os.environ["HB_ADMIN_TOKEN"]


class SignedRequest(requests.auth.AuthBase):
    """Signs the final prepared request: method, request target, body bytes."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        if isinstance(body, str):
            # requests sends str bodies encoded as ISO-8859-1.
            body = body.encode("latin-1")
        timestamp = str(int(time.time()))
        nonce = secrets.token_urlsafe(24)
        signed = "\n".join(
            [request.method.upper(), request.path_url, timestamp, nonce, hashlib.sha256(body).hexdigest(), ""]
        )
        signature = base64.urlsafe_b64encode(hmac.new(APP_SECRET, signed.encode(), hashlib.sha256).digest())
        request.headers["Authorization"] = (
            f"HONGBAO-HMAC-SHA256 app_id={APP_ID},key_id={KEY_ID},timestamp={timestamp},"
            f"nonce={nonce},signature={signature.rstrip(b'=').decode()}"
        )
        return request


def schemes(operation) -> set[str]:
    """The schemes of the operation's first security requirement (none: a public operation)."""
    for requirement in operation.definition.raw.get("security", []) or []:
        if requirement:
            return set(requirement)
    return set()


def uses(scheme: str):
    return lambda context: scheme in schemes(context.operation)


schemathesis.auth.set_from_requests(SignedRequest()).apply_to(uses("app_signature"))


@schemathesis.auth(refresh_interval=None).apply_to(uses("admin"))
class AdminBearer:
    def get(self, case, context):
        return ADMIN_TOKEN

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"

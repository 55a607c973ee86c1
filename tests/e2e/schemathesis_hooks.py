"""Schemathesis hooks: sign every request to a signed kura endpoint.

Loaded by `schemathesis run` through SCHEMATHESIS_HOOKS (see
crates/kura/tests/e2e_schemathesis.rs). Reads the API key and its HMAC secret from
KURA_E2E_KEY and KURA_E2E_SECRET.

An operation is signed when the document gives it a security requirement (the
`ApiKey` scheme, the `X-MBX-APIKEY` header). For those, the hook hands `requests` an
auth object that runs on the fully prepared request, so it signs the exact bytes that
go on the wire: it drops any generated `timestamp`, `recvWindow` and `signature`,
appends a fresh `timestamp` and `recvWindow` (to the query for GET and DELETE, to the
form body for POST), computes hex(HMAC-SHA256(secret, raw query + raw body)) as kura
and Binance do, appends `signature`, and sets the API key header. Everything else the
fuzzer generated is sent, and signed, as generated. Every 5xx answer is recorded
(see `after_call`).

kura limits request weight per client address (6000 a minute, then 429 and a ban:
418), and one fuzzing run weighs several times that. So that the run tests the
endpoints rather than the limiter, every request goes on a fresh connection
(`Connection: close`) from the next of a set of loopback source addresses
(127.0.1.1 to 127.0.1.250; Linux routes all of 127.0.0.0/8 to the loopback
interface). Nothing leaves the machine. 429 and 418 remain documented answers, so a
limit that is reached anyway still conforms.
"""

import hashlib
import hmac
import itertools
import json
import os
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import requests
import schemathesis
import urllib3.util.connection

API_KEY_HEADER = "X-MBX-APIKEY"
SIGNING_PARAMS = (b"timestamp", b"recvWindow", b"signature")
# Generous, so a slow run never fails on time; the server accepts at most 60000.
RECV_WINDOW_MS = 60000


def _without_signing_params(raw):
    """`raw` (a query string or form body, bytes) without timestamp, recvWindow and
    signature segments."""
    kept = []
    for segment in raw.split(b"&"):
        if not segment:
            continue
        name = segment.split(b"=", 1)[0]
        if name in SIGNING_PARAMS:
            continue
        kept.append(segment)
    return b"&".join(kept)


def _join(raw, extra):
    return extra if not raw else raw + b"&" + extra


class FreshConnection(requests.auth.AuthBase):
    """Asks for the connection to be closed after the response, so the next request
    opens a new one (from the next source address)."""

    def __call__(self, request):
        request.headers["Connection"] = "close"
        return request


class BinanceSigner(FreshConnection):
    """Signs a prepared request the way a Binance client does."""

    def __init__(self, key, secret):
        self.key = key
        self.secret = secret.encode()

    def __call__(self, request):
        request = super().__call__(request)
        parts = urlsplit(request.url)
        query = _without_signing_params(parts.query.encode("utf-8"))
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        body = _without_signing_params(body)
        fresh = b"timestamp=%d&recvWindow=%d" % (int(time.time() * 1000), RECV_WINDOW_MS)
        in_body = request.method.upper() in ("POST", "PUT")
        if in_body:
            body = _join(body, fresh)
        else:
            query = _join(query, fresh)
        signature = hmac.new(self.secret, query + body, hashlib.sha256).hexdigest()
        tail = b"signature=" + signature.encode("ascii")
        if in_body:
            body = _join(body, tail)
        else:
            query = _join(query, tail)
        request.url = urlunsplit(
            (parts.scheme, parts.netloc, parts.path, query.decode("utf-8"), parts.fragment)
        )
        if in_body:
            request.body = body
            request.headers["Content-Length"] = str(len(body))
            request.headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        else:
            request.body = body or None
            if body:
                request.headers["Content-Length"] = str(len(body))
        request.headers[API_KEY_HEADER] = self.key
        return request


def _is_signed(operation):
    security = operation.definition.raw.get("security")
    return bool(security) and any(
        "ApiKey" in requirement for requirement in security if isinstance(requirement, dict)
    )


_SOURCES = itertools.cycle(["127.0.1.%d" % i for i in range(1, 251)])
_SOURCES_LOCK = threading.Lock()
_create_connection = urllib3.util.connection.create_connection


def _create_connection_from_next_source(address, *args, **kwargs):
    """urllib3's `create_connection`, binding connections to loopback hosts to the
    next source address."""
    if address[0] in ("127.0.0.1", "localhost") and not kwargs.get("source_address"):
        with _SOURCES_LOCK:
            kwargs["source_address"] = (next(_SOURCES), 0)
    return _create_connection(address, *args, **kwargs)


urllib3.util.connection.create_connection = _create_connection_from_next_source

_SIGNER = None
_SERVER_ERRORS_LOCK = threading.Lock()


def _signer():
    global _SIGNER
    if _SIGNER is None:
        key = os.environ.get("KURA_E2E_KEY")
        secret = os.environ.get("KURA_E2E_SECRET")
        if not key or not secret:
            raise RuntimeError("KURA_E2E_KEY and KURA_E2E_SECRET must name an API key and its secret")
        _SIGNER = BinanceSigner(key, secret)
    return _SIGNER


_FRESH_CONNECTION = FreshConnection()


@schemathesis.hook
def before_call(context, case, kwargs):
    # `requests` runs the auth object on the prepared request, after encoding.
    kwargs["auth"] = _signer() if _is_signed(case.operation) else _FRESH_CONNECTION


@schemathesis.hook
def after_call(context, case, response):
    """Record every 5xx (request and response) as one JSON line in the file named by
    KURA_E2E_SERVER_ERRORS, for the test to examine."""
    path = os.environ.get("KURA_E2E_SERVER_ERRORS")
    if not path or response.status_code < 500:
        return
    request = response.request
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode("utf-8")
    line = json.dumps(
        {
            "method": request.method,
            "url": request.url,
            "body": body.decode("utf-8", "replace"),
            "status": response.status_code,
            "response": response.content.decode("utf-8", "replace"),
        }
    )
    with _SERVER_ERRORS_LOCK, open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")

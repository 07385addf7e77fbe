"""What the Python checks share: HS256 tokens minted with the standard library alone (an
implementation independent of hermod-core's), and reading one expected frame."""

import base64
import hashlib
import hmac
import json
import time

TIMEOUT = 10


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def mint(secret: str, sub: str, ttl: int = 3600, **grants) -> tuple[str, int]:
    """A token for `sub` living `ttl` seconds, with the given grant claims (`rooms`, `publish`,
    `send`: lists of patterns); returns it with its `exp`."""
    exp = int(time.time()) + ttl
    claims = {"sub": sub, "exp": exp}
    claims.update({name: list(patterns) for name, patterns in grants.items() if patterns})
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64url(sig)}", exp


def recv(ws, op):
    """The next frame of `ws`, which must have this `op`."""
    frame = json.loads(ws.recv(timeout=TIMEOUT))
    if frame.get("op") != op:
        raise AssertionError(f"expected op {op!r}, got {frame}")
    return frame

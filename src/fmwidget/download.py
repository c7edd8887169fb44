"""Image bytes from the network or a data URL, bounded in time and size (for :mod:`fmwidget.loading`)."""

from __future__ import annotations

import base64
import binascii
import http.client
import socket
import time
import urllib.error
import urllib.parse
import urllib.request

__all__ = ["decode_data_url", "fetch"]


def decode_data_url(url: str, argname: str, limit: int) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep:
        raise ValueError(
            f"{argname} is a data URL without a ',' before its data; pass "
            "'data:image/png;base64,<data>'."
        )
    if len(payload) > limit * 4 // 3 + 4:
        raise ValueError(
            f"{argname}: the data URL is over {limit} bytes; save it to a file."
        )
    try:
        if header.lower().endswith(";base64"):
            return base64.b64decode(payload, validate=False)
        return urllib.parse.unquote_to_bytes(payload)
    except (binascii.Error, ValueError) as err:
        raise ValueError(
            f"{argname}: the data URL's base64 payload is invalid ({err}); re-encode the image."
        ) from err


def _opener_for(url: str) -> urllib.request.OpenerDirector:
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.startswith("127.") or host == "::1":
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never proxy loopback
    return urllib.request.build_opener()


def fetch(url: str, argname: str, timeout: float, limit: int) -> tuple[bytes, str]:
    """Fetch ``url`` within ``timeout`` seconds and ``limit`` bytes; return (data, content type).

    The caller passes the limits (:mod:`fmwidget.loading` passes its ``URL_TIMEOUT_S`` and
    ``MAX_DOWNLOAD_BYTES``).
    """
    timeout, limit = float(timeout), int(limit)
    fix = "Check the address and your connection, or download the image and pass its path."
    try:
        headers = {"User-Agent": "fmwidget", "Accept": "image/*"}
        request = urllib.request.Request(url, headers=headers)
    except ValueError as err:
        raise ValueError(f"{argname}={url!r} is not a valid URL ({err}). {fix}") from err
    deadline = time.monotonic() + timeout
    try:
        response = _opener_for(url).open(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        err.close()  # it holds the open response
        raise ValueError(
            f"{argname}: the server at {url} answered HTTP {err.code} {err.reason}. {fix}"
        ) from err
    except urllib.error.URLError as err:
        reason = err.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            reason = f"no answer within {timeout:g} s"
        raise ConnectionError(f"{argname}: could not reach {url} ({reason}). {fix}") from err
    except TimeoutError as err:
        raise ConnectionError(
            f"{argname}: {url} did not answer within {timeout:g} s. {fix}"
        ) from err
    except (OSError, http.client.HTTPException, ValueError) as err:
        raise ConnectionError(f"{argname}: could not download {url} ({err}). {fix}") from err
    with response:
        content_type = response.headers.get_content_type()
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ValueError(
                f"{argname}: {url} is {int(declared)} bytes, over the {limit}-byte download limit "
                "(fmwidget.loading.MAX_DOWNLOAD_BYTES). Download and downscale it yourself."
            )
        chunks, total = [], 0
        try:
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError("download deadline passed")
                chunk = response.read(min(1 << 16, limit + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
                if total > limit:
                    break
        except (OSError, http.client.HTTPException) as err:
            raise ConnectionError(
                f"{argname}: downloading {url} failed or took over {timeout:g} s ({err}). {fix}"
            ) from err
    if total > limit:
        raise ValueError(
            f"{argname}: {url} sent more than the {limit}-byte download limit "
            "(fmwidget.loading.MAX_DOWNLOAD_BYTES). Download and downscale it yourself."
        )
    return b"".join(chunks), content_type

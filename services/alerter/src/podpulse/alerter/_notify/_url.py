"""Whether a string can be a receiver's URL, judged by the parser that will send to it.

The settings (``ALERTMANAGER_URL``), the start-up check of the secret URLs (Slack, webhook)
and every send ask the same question of the same parser, httpx's: a URL that
``urllib.parse`` takes but httpx refuses (``http://h:abc/``) is caught at start, not at
the first send.
"""

from __future__ import annotations

import httpx

__all__ = ["url_problem"]


def url_problem(value: str) -> str | None:
    """Why *value* cannot be a receiver's URL, or None; the reason never quotes the value
    (a webhook URL is a credential, any URL can hold a password)."""
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL:
        return "not a URL"
    if url.scheme not in ("http", "https") or not url.host:
        return "must be an http:// or https:// URL with a host"
    return None

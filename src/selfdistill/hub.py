"""One quick question to the model and dataset hub, so a wrong or unreachable name fails in seconds."""

from __future__ import annotations


def hub_status(repo_id: str, kind: str = "models", timeout: float = 5.0) -> str:
    """One request, no retries: "ok", "missing" (the hub says 404) or "unreachable" (offline, DNS, timeout).

    The hub client retries a failed connection with backoff for about a minute; asking once first lets an
    unknown or unreachable name fail in seconds, and a cached copy load without touching the network."""
    import urllib.error
    import urllib.request

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "unreachable"
    url = f"{constants.ENDPOINT.rstrip('/')}/api/{kind}/{repo_id}"
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError as err:
        return "missing" if err.code == 404 else "ok"  # 401/403 (gated, private): let the client use its token
    except (urllib.error.URLError, OSError):
        return "unreachable"
    return "ok"

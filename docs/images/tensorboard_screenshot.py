"""Screenshot a running TensorBoard with headless Chromium, for docs/tracking.md.

    python docs/images/tensorboard_screenshot.py 'http://localhost:6006/#scalars&_smoothingWeight=0' OUT.png

Chromium's own ``--screenshot`` cannot change settings TensorBoard keeps in the browser's localStorage; this drives
Chromium over the DevTools protocol instead, so "ignore outliers in chart scaling" can be switched off first (with
a handful of steps it would crop the first ones from every chart). Needs ``chromium`` (Debian) and ``websockets``.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import websockets

PORT = 9333
SETTINGS = {"_ignoreYOutliers": "false"}
"""localStorage entries TensorBoard reads at start (the legacy scalars dashboard's chart options)."""


async def shoot(url: str, out: Path, width: int, height: int, wait_s: float) -> None:
    pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{PORT}/json"))
    page = next(p for p in pages if p["type"] == "page")
    ids = itertools.count(1)
    async with websockets.connect(page["webSocketDebuggerUrl"], max_size=2**26) as ws:

        async def call(method: str, **params):
            msg_id = next(ids)
            await ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
            while True:
                reply = json.loads(await ws.recv())
                if reply.get("id") == msg_id:
                    return reply.get("result", {})

        await call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        await call("Page.navigate", url=url)
        await asyncio.sleep(wait_s)
        for key, value in SETTINGS.items():
            await call("Runtime.evaluate", expression=f"localStorage.setItem({key!r}, {value!r})")
        await call("Page.reload")
        await asyncio.sleep(wait_s)
        shot = await call("Page.captureScreenshot", format="png")
        out.write_bytes(base64.b64decode(shot["data"]))


def main(url: str, out: str, width: int = 1100, height: int = 1000, wait_s: float = 30.0) -> None:
    with tempfile.TemporaryDirectory() as profile:
        browser = subprocess.Popen(["chromium", "--headless", "--no-sandbox", "--enable-unsafe-swiftshader",
                                    "--hide-scrollbars", f"--remote-debugging-port={PORT}", f"--user-data-dir={profile}",
                                    f"--window-size={width},{height}", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            for _ in range(120):  # the DevTools endpoint comes up within seconds (minutes on a loaded machine)
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{PORT}/json/version")
                    break
                except OSError:
                    time.sleep(1)
            asyncio.run(shoot(url, Path(out), width, height, wait_s))
        finally:
            browser.terminate()
            browser.wait(timeout=30)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

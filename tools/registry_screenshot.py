"""A manual check, not a test (`make registry-screenshot`): the MLflow pages a reviewer opens after
`make run`, as headless Chromium draws them, so a person can see what is above the fold.

Starts `mlflow server` on loopback over the tracking store in params.yaml, then screenshots
- the registered model (`#/models/<name>`): its versions, their aliases;
- the newest version (`#/models/<name>/versions/<v>`): the card's summary, the aliases, the headline tags.
Writes docs/registry-model.png and docs/registry-version.png (or --out). Needs Debian's chromium
(the Makefile target installs it). Too heavy for `make test`: Chromium is ~300 MB of packages.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from mlflow import MlflowClient

from videossl.config import load_config
from videossl.tracking import tracking_uri

# Chromium as this machine's probe runs it: headless, no sandbox (root), nothing fetched but the page
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]
WINDOW = (1920, 1080)       # a full-HD screen: what is "above the fold"
RENDER_BUDGET_MS = 20000    # virtual time the single-page app gets to fetch and draw
SERVER_WAIT_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + SERVER_WAIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"mlflow server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    sys.exit(f"mlflow server did not answer {url}/health within {SERVER_WAIT_S} s")


def screenshot(chromium: str, url: str, dest: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                        f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--virtual-time-budget={RENDER_BUDGET_MS}",
                        f"--screenshot={dest}", url], check=True, capture_output=True, timeout=180)
    print(f"{dest}  <- {url}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="docs", help="folder the PNGs go to")
    args = ap.parse_args()
    chromium = shutil.which("chromium") or sys.exit("chromium not found: apt-get install -y chromium")
    cfg = load_config(args.params)
    store = tracking_uri(cfg.tracking)
    name = cfg.register.model_name
    versions = MlflowClient(tracking_uri=store, registry_uri=store).search_model_versions(f"name='{name}'")
    if not versions:
        sys.exit(f"no version of {name} in {store}: run `make run` first")
    newest = max(versions, key=lambda v: int(v.version))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store,
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                              env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    try:
        _wait_healthy(url, server)
        screenshot(chromium, f"{url}/#/models/{name}", out / "registry-model.png")
        screenshot(chromium, f"{url}/#/models/{name}/versions/{newest.version}", out / "registry-version.png")
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)


if __name__ == "__main__":
    main()

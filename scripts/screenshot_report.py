"""Headless-Chromium screenshot of a report page; the tests use it and it makes docs/report.png.

    .venv/bin/python scripts/screenshot_report.py demo-output/report/report.html docs/report.png \
        --height 2670

(docs/report.png: `inner-onnx demo`'s report down to the training curves.)
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")


def screenshot(page: Path, png: Path, width: int = 1200, height: int = 2400) -> None:
    """Render `page` in a fresh profile with no network-facing background services."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--user-data-dir={profile}",
            f"--screenshot={png.resolve()}",
            f"--window-size={width},{height}",
            page.resolve().as_uri(),
        ]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if completed.returncode != 0 or not png.is_file():
        raise RuntimeError(
            f"chromium exited with {completed.returncode} and no screenshot: "
            + completed.stderr.strip()[-400:]
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path, help="report.html")
    parser.add_argument("output", type=Path, help="PNG to write")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=2400)
    options = parser.parse_args()
    screenshot(options.page, options.output, options.width, options.height)


if __name__ == "__main__":
    main()

"""Headless-Chromium screenshot of a report page; the tests use it and it makes docs/report.png.

    .venv/bin/python scripts/screenshot_report.py demo-output/report/report.html docs/report.png \
        --height 2670

(docs/report.png: `inner-onnx demo`'s report down to the training curves.)

`--scale 0.5` shrinks the picture (matplotlib's thumbnail) to keep the file small.
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
    parser.add_argument("--scale", type=float, default=1.0, help="shrink factor, e.g. 0.5")
    options = parser.parse_args()
    if options.scale == 1.0:
        screenshot(options.page, options.output, options.width, options.height)
        return
    from matplotlib.image import thumbnail

    with tempfile.TemporaryDirectory() as folder:
        full = Path(folder) / "full.png"
        screenshot(options.page, full, options.width, options.height)
        thumbnail(str(full), str(options.output), scale=options.scale)


if __name__ == "__main__":
    main()

"""Printing a sheet's HTML to PDF (and to a PNG screenshot) with headless Chromium."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

# A4 at Chromium's 96 dpi: 210 x 297 mm.
A4_PIXELS = (794, 1123)


class PrintError(Exception):
    """Chromium is missing or could not print a page."""


def find_chromium() -> str:
    """The Chromium binary (Debian's ``chromium``); PrintError names the package when it is missing."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise PrintError("headless Chromium is needed to print the sheets: apt-get install chromium "
                     "(scripts/bootstrap installs it), or give --no-pdf")


def print_html(html: str, *, pdf: bool = True, png: bool = False, timeout: float = 60) -> tuple[bytes | None, bytes | None]:
    """The PDF (page size from the page's CSS ``@page``) and/or a one-A4-page PNG screenshot of ``html``.

    Everything happens in a private temporary directory (the page may hold a
    password); the caller writes the bytes where they belong.
    """
    binary = find_chromium()
    with tempfile.TemporaryDirectory(prefix="mailstack-print-") as work:
        work_dir = Path(work)
        page, pdf_path, png_path = work_dir / "sheet.html", work_dir / "sheet.pdf", work_dir / "sheet.png"
        page.write_text(html, encoding="utf-8")
        outputs = ([f"--print-to-pdf={pdf_path}", "--no-pdf-header-footer"] if pdf else []) + \
                  ([f"--screenshot={png_path}", f"--window-size={A4_PIXELS[0]},{A4_PIXELS[1]}"] if png else [])
        # Its own profile per run, so that runs in parallel do not lock one another out.
        # --no-sandbox: Chromium's sandbox refuses to run as root, which an operator on the host often is.
        command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
                   "--hide-scrollbars", f"--user-data-dir={work_dir / 'profile'}", *outputs, page.as_uri()]
        try:
            run = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=work)
        except subprocess.TimeoutExpired:
            raise PrintError(f"Chromium did not print the page within {timeout:.0f} s") from None
        wanted = [path for path, asked in ((pdf_path, pdf), (png_path, png)) if asked]
        if run.returncode != 0 or not all(path.exists() and path.stat().st_size for path in wanted):
            last = (run.stderr.strip().splitlines() or ["no message"])[-1]
            raise PrintError(f"Chromium could not print the page (exit {run.returncode}): {last}")
        return (pdf_path.read_bytes() if pdf else None), (png_path.read_bytes() if png else None)

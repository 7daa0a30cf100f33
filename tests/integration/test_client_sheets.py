"""`mailstack clients` printing real sheets with headless Chromium: one A4 page each, the values read back from the PDF."""

from __future__ import annotations

import struct
import subprocess

import pytest
from typer.testing import CliRunner

from mailstack.cli import app
from mailstack.clients.chromium import A4_PIXELS, print_html
from mailstack.stack.passwords import initial_password
from tests.conftest import PROJECT, require_tool

pytestmark = pytest.mark.integration

SEED = "Q" * 48


@pytest.fixture(scope="module")
def printed(tmp_path_factory):
    """Every sheet of the dev stack printed in both languages."""
    for tool in ("chromium", "pdftotext", "pdfinfo"):
        require_tool(tool)
    out = tmp_path_factory.mktemp("sheets") / "settings"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(PROJECT)
        result = CliRunner().invoke(app, ["clients", "-s", "dev", "--out", str(out), "--switch-date", "2027-01-15"],
                                    env={"MAILSTACK_PASSWORD_SEED": SEED})
    assert result.exit_code == 0, result.output
    return out


def pdf_text(path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout


def pdf_pages(path) -> tuple[int, str]:
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    return int(fields["Pages"]), fields["Page size"].strip()


def test_every_sheet_is_one_a4_page_written_0600(printed):
    pdfs = sorted(printed.glob("*.pdf"))
    assert len(pdfs) == 8
    for pdf in pdfs:
        pages, size = pdf_pages(pdf)
        assert pages == 1 and size.endswith("(A4)"), (pdf.name, pages, size)
        assert pdf.stat().st_mode & 0o777 == 0o600


def test_the_japanese_pdf_of_a_pop_user_gives_the_pop_values_the_password_and_the_dates(printed):
    text = pdf_text(printed / "hanako.sato@example.com.ja.pdf")
    for expected in ("メール設定のご案内", "hanako.sato@example.com", "受信サーバー（POP3）", "mail-dev.example.com",
                     "995", "465", "587", "STARTTLS", "SSL/TLS", initial_password(SEED, "hanako.sato@example.com"),
                     "2027年1月15日（金）", "2027年1月29日（金）", "mail.example.net", "サーバーにメッセージのコピーを置く",
                     "500 MB", "postmaster@example.com"):
        assert expected in text, expected


def test_the_english_pdf_of_an_imap_user_with_a_kept_password_shows_no_password(printed):
    text = pdf_text(printed / "taro.yamada@example.com.en.pdf")
    for expected in ("Your mail settings", "Incoming server (IMAP)", "mail-dev.example.com", "993", "465", "587",
                     "Unchanged: the password you use now", "Friday 15 January 2027", "Friday 29 January 2027",
                     "keep both", "Leave a copy of messages on the server"):
        assert expected in text, expected
    assert "995" not in text


def test_a_sheet_screenshot_is_one_a4_page_png(printed):
    html = (printed / "hanako.sato@example.com.ja.html").read_text()
    pdf, png = print_html(html, pdf=False, png=True)
    assert pdf is None and png.startswith(b"\x89PNG\r\n\x1a\n")
    assert struct.unpack(">II", png[16:24]) == A4_PIXELS

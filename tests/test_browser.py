"""The web page in a real browser: Debian's chromium driven by Playwright, against a live server.

Skipped when /usr/bin/chromium or the playwright package is missing. Set
ANIMELITE_SCREENSHOTS=DIR to also keep the screenshots in DIR.
"""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from helpers import make_store, photo_like
from PIL import Image, ImageOps

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from animelite.pipeline import working_size  # noqa: E402
from animelite.server import ServerConfig, create_app  # noqa: E402

LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]


class LiveServer:
    """uvicorn in a thread on a free loopback port."""

    def __init__(self, app):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        end = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < end and self.thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(20)
        self.sock.close()


@pytest.fixture(scope="module")
def models(tmp_path_factory, request) -> tuple[Path, str]:
    """Synthetic styles, plus the real Hayao model when ../shared has it (its default style then)."""
    store = make_store(tmp_path_factory.mktemp("browser"))
    try:
        shared_models = request.getfixturevalue("shared_models")
    except pytest.skip.Exception:
        return store.root, "tiny"
    store.pull("hayao", mirror=shared_models, progress=False)
    return store.root, "hayao"


@pytest.fixture()
def photo(request, tmp_path) -> Path:
    """A real photo from ../shared when present, else a generated one."""
    try:
        photos = request.getfixturevalue("shared_photos")
        candidates = sorted((photos / "scenes").glob("*.jpg"))
        if candidates:
            return next((p for p in candidates if p.name == "china.jpg"), candidates[0])
    except pytest.skip.Exception:
        pass
    path = tmp_path / "generated photo.jpg"
    Image.fromarray(photo_like(900, 600, seed=3)).save(path, quality=92)
    return path


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        try:
            yield b
        finally:
            b.close()


def _save_screens(page, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / f"{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    keep = os.environ.get("ANIMELITE_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(keep) / f"{name}.png"), full_page=True)
    return shot


def test_page_stylizes_a_photo_end_to_end(browser, models, photo, tmp_path):
    models_dir, style = models
    cfg = ServerConfig(models_dir=models_dir, default_style=style, workers=1, preview_size=192)
    with LiveServer(create_app(cfg)) as server:
        context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
        page = context.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(server.url + "/")

        # the style cards, with previews rendered by the server from the bundled sample
        card = page.locator(f'.style-card input[value="{style}"]')
        card.wait_for(state="attached")
        assert card.is_checked()
        page.wait_for_function(
            "() => [...document.querySelectorAll('.style-card .shot img')]"
            ".every(i => i.complete && i.naturalWidth > 0)")

        # pick the photo: the page starts at once and shows a progress state
        page.set_input_files("#file", str(photo))
        page.wait_for_selector("#after-actions:not([hidden])", timeout=60_000)
        assert page.locator("#busy").is_hidden()
        assert "Done" in page.inner_text("#status")
        assert page.locator("#error").is_hidden()

        with Image.open(photo) as im:
            w, h = ImageOps.exif_transpose(im).size
        from animelite.store import ModelStore

        multiple = ModelStore(models_dir).style(style).size_multiple
        assert page.locator("#size").input_value() == "auto"  # the server's default size: chosen per photo
        natural = page.evaluate("() => [document.getElementById('after').naturalWidth, "
                                "document.getElementById('after').naturalHeight]")
        expected = working_size(w, h, max(natural), multiple)  # the photo's aspect, at the size auto chose
        assert tuple(natural) == expected and 384 <= max(natural) <= 768
        assert page.locator("#timings tr").count() >= 5

        # the before/after slider works from the keyboard
        slider = page.locator("#slider")
        slider.focus()
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("ArrowLeft")
        assert slider.input_value() == "48"
        assert page.evaluate("() => document.getElementById('compare').style.getPropertyValue('--pos')") == "48%"
        page.keyboard.press("End")
        assert slider.input_value() == "100"
        page.keyboard.press("Home")
        page.keyboard.press("PageUp")
        slider.fill("50")

        # download gives the same picture
        with page.expect_download() as info:
            page.click("#download")
        download = info.value
        assert download.suggested_filename.endswith(f"-{style}.jpg")
        data = Path(download.path()).read_bytes()
        img = Image.open(io.BytesIO(data))
        assert img.format == "JPEG" and img.size == expected

        page.locator("#timings-box summary").click()
        _save_screens(page, tmp_path, "page")

        # a phone-sized screen: one column, nothing wider than the viewport
        page.set_viewport_size({"width": 390, "height": 844})
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0
        _save_screens(page, tmp_path, "phone")

        # a file that is not a picture gets a message a person understands
        bad = tmp_path / "notes.jpg"
        bad.write_bytes(b"just some text, not a photo")
        page.set_input_files("#file", str(bad))
        page.wait_for_selector("#error:not([hidden])")
        message = page.inner_text("#error")
        assert "not an image" in message and "{" not in message
        context.close()
    assert not [p for p in problems if "415" not in p], problems

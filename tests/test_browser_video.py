"""The Video and Live tabs in a real browser: Debian's chromium (Playwright) against ``animelite serve``'s listener.

The camera is Chromium's fake capture device playing a Y4M file written at test time: a pan across a real
photo from ../shared (or a synthetic one). Skipped when /usr/bin/chromium or playwright is missing. Set
ANIMELITE_SCREENSHOTS=DIR to keep the screenshots.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np
import pytest
from clips import load_photo, pan_frames
from helpers import make_store
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
pytest.importorskip("uvicorn")
pytest.importorskip("websockets")
pytest.importorskip("animelite.video")

from server_helpers import LiveServer, config  # noqa: E402
from test_server_jobs import write_clip  # noqa: E402

LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--use-fake-ui-for-media-stream",
               "--use-fake-device-for-media-stream"]
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with")


def write_y4m(path: Path, frames, fps: int = 15) -> Path:
    """Frames (H, W, 3) uint8 RGB as a YUV4MPEG2 4:2:0 file (BT.601 full range), what Chromium's fake camera plays."""
    frames = list(frames)
    h, w = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in frames:
            r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
            y = 0.299 * r + 0.587 * g + 0.114 * b
            u = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
            v = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b

            def sub(c):
                return c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

            f.write(b"FRAME\n")
            for plane in (y, sub(u), sub(v)):
                f.write(np.clip(plane + 0.5, 0, 255).astype(np.uint8).tobytes())
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory, request):
    """A models directory (hayao when ../shared has it, else the synthetic 'tiny'), the fake camera file."""
    root = tmp_path_factory.mktemp("browser-video")
    store = make_store(root)
    style, photo = "tiny", None
    try:
        store.pull("hayao", mirror=request.getfixturevalue("shared_models"), progress=False)
        style = "hayao"
    except pytest.skip.Exception:
        pass
    try:
        scenes = sorted((request.getfixturevalue("shared_photos") / "scenes").glob("*.jpg"))
        photo = scenes[0] if scenes else None
    except pytest.skip.Exception:
        pass
    y4m = write_y4m(root / "camera.y4m", pan_frames(load_photo(photo), frames=30, size=(320, 240)))
    return store.root, style, y4m, root


@pytest.fixture(scope="module")
def browser(setup):
    y4m = setup[2]
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                              args=LAUNCH_ARGS + [f"--use-file-for-fake-video-capture={y4m}"])
        try:
            yield b
        finally:
            b.close()


def _shot(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    keep = os.environ.get("ANIMELITE_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(keep) / f"{name}.png"), full_page=True)


def _page(browser, server, problems, viewport=None):
    context = browser.new_context(viewport=viewport or {"width": 1280, "height": 900}, accept_downloads=True)
    context.grant_permissions(["camera"], origin=server.url)
    page = context.new_page()
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    return context, page


def test_live_tab_draws_stylized_camera_frames(browser, setup, tmp_path):
    models, style, _, _ = setup
    cfg = config(models, default_style=style, workers=2, threads=1, warmup=False, jobs_dir=tmp_path / "jobs")
    problems: list[str] = []
    with LiveServer(cfg) as server:
        context, page = _page(browser, server, problems, viewport={"width": 390, "height": 844})  # a phone
        page.goto(server.url + "/#live")
        page.locator("#l-style option").first.wait_for(state="attached")
        page.click("#l-start")
        page.wait_for_function("() => Number(document.getElementById('l-canvas').dataset.frames || 0) >= 5",
                               timeout=60_000)
        page.wait_for_function("() => document.getElementById('l-fps').textContent.includes('fps')", timeout=20_000)
        data_url = page.evaluate("() => document.getElementById('l-canvas').toDataURL('image/png')")
        drawn = np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))
        assert max(drawn.shape[:2]) == 256  # the server's answer at the default live size, drawn as it came
        assert drawn.std() > 10, "the mirror is blank"
        width = page.evaluate("() => document.getElementById('l-canvas').getBoundingClientRect().width")
        assert width >= 0.9 * 390  # (nearly) the phone's full width
        _shot(page, tmp_path, "live-tab-phone")
        with page.expect_download() as dl:
            page.click("#l-snap")
        assert dl.value.suggested_filename.endswith(".png")
        # leaving the tab stops the camera and the connection
        page.click("#tab-photo")
        page.wait_for_function("() => !document.getElementById('l-start').hidden")
        assert page.evaluate("() => document.getElementById('l-cam').srcObject") is None
        context.close()
    assert not problems, problems


def test_video_tab_uploads_a_clip_and_plays_the_result(browser, setup, tmp_path):
    models, style, _, root = setup
    clip = write_clip(tmp_path / "holiday clip.mp4", frames=24, size=(320, 240), fps=12)
    cfg = config(models, default_style=style, workers=2, threads=1, warmup=False, jobs_dir=tmp_path / "jobs")
    problems: list[str] = []
    with LiveServer(cfg) as server:
        context, page = _page(browser, server, problems)
        page.goto(server.url + "/")
        page.click("#tab-video")
        page.locator("#v-style option").first.wait_for(state="attached")
        page.set_input_files("#v-file", str(clip))
        page.select_option("#v-size", "256")
        page.select_option("#v-format", "webm")
        page.click("#v-go")
        page.wait_for_selector("#v-progress-box:not([hidden])")
        page.wait_for_selector("#v-compare:not([hidden])", timeout=120_000)
        assert "24 frames" in page.inner_text("#v-progress-text")
        page.wait_for_function("() => document.getElementById('v-after').readyState >= 2", timeout=30_000)
        assert page.evaluate("() => document.getElementById('v-after').videoWidth") == 256
        page.evaluate("() => { const v = document.getElementById('v-after'); v.muted = true; v.play(); }")
        page.wait_for_function("() => document.getElementById('v-after').currentTime > 0.5", timeout=30_000)
        assert page.evaluate("() => document.getElementById('v-before').videoWidth") == 320
        assert page.get_attribute("#v-download", "download").endswith(".webm")
        _shot(page, tmp_path, "video-tab-done")
        context.close()
    assert not problems, problems

"""rpfm serve in a real browser: Debian's chromium driven by Playwright, against `rpfm serve` on a free loopback port.

One server (the shipped demo model, CPU) and one browser serve the whole module. The tests upload files through the
page's own file inputs, click its buttons and read what it shows; the live tab runs on Chromium's fake camera fed
with a Y4M clip of synthetic people. No request may leave the machine: every one to a host other than the server is
recorded and refused, and the last test checks there were none, then stops the server and checks its temporary
folder is gone and the working folder untouched.

Without chromium (or playwright) the module skips with the reason; CI sets RPFM_REQUIRE_BROWSER=1 so it fails there
instead. RPFM_SERVE_SCREENSHOTS=DIR saves a screenshot of each tab into DIR (the README's come from docs/).
"""
from __future__ import annotations

import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

from rpfm.data.synthetic import generate_sample

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 90_000


def _why_no_browser() -> str | None:
    if not Path(CHROMIUM).is_file():
        return "chromium is not installed (apt-get install chromium; .ci/run does)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright; install.sh installs it)"
    try:
        import gradio  # noqa: F401
    except ImportError:
        return "gradio is not installed (pip install 'rpfm[serve]')"
    return None


_reason = _why_no_browser()
if _reason and os.environ.get("RPFM_REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"RPFM_REQUIRE_BROWSER=1 but the browser tests cannot run: {_reason}")
pytestmark = pytest.mark.skipif(_reason is not None, reason=_reason or "")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """RGB uint8 frames -> a YUV4MPEG2 (4:2:0, BT.601 full range) file, Chromium's fake-camera input."""
    h, w = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in frames:
            r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
            y = 0.299 * r + 0.587 * g + 0.114 * b
            u = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
            v = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
            sub = lambda c: c.reshape(h // 2, 2, w // 2, 2).mean((1, 3))  # noqa: E731
            f.write(b"FRAME\n")
            for plane in (y, sub(u), sub(v)):
                f.write(np.clip(plane.round(), 0, 255).astype(np.uint8).tobytes())
    return path


# ============================================================================================ fixtures
@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("serve-files")
    person = generate_sample(21, 3, 0, 256)[0]                       # synthetic people at 256 x 256
    dancer = generate_sample(21, 4, 3, 256)[0]
    Image.fromarray(person).save(d / "person.png")
    Image.fromarray(dancer).save(d / "dancer.png")
    (d / "notes.png").write_text("this is not a picture")
    kps = [generate_sample(21, 5, k, 128)[1].to_dict() for k in range(4)]
    import json

    (d / "sequence.json").write_text(json.dumps(kps))
    camera = [generate_sample(21, 6, k // 5, 256)[0] for k in range(30)]   # 6 poses, 5 frames each, looping
    write_y4m(d / "camera.y4m", camera)
    return {p.stem: p for p in d.iterdir()} | {"dir": d}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`rpfm serve` (the default model) on a free port, run from an empty folder; its output goes to a log file."""
    cwd, logs = tmp_path_factory.mktemp("serve-cwd"), tmp_path_factory.mktemp("serve-log")
    log = logs / "serve.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "rpfm.cli", "serve", "--port", str(_free_port()),
                                 "--device", "cpu"], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline, ready = time.monotonic() + 240, None
    while ready is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
        ready = re.search(r"rpfm serve: (http://\S+?)/? .*files in (\S+) ", log.read_text())
    if ready is None:
        proc.kill()
        proc.wait(30)
        pytest.fail("rpfm serve did not start:\n" + log.read_text()[-3000:])
    yield {"url": ready.group(1), "tmp": Path(ready.group(2)), "cwd": cwd, "proc": proc, "log": log}
    if proc.poll() is None:   # a test failed before the shutdown test: stop it the clean way, then for sure
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


@pytest.fixture(scope="module")
def browser(files):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS + [
            "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={files['camera']}"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def outside() -> list[str]:
    return []   # every request the page tried to send off this machine


@pytest.fixture
def page(browser, server, outside):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, permissions=["camera"])
    host = urlparse(server["url"]).hostname

    def route(r):
        if urlparse(r.request.url).hostname in (host, None) or r.request.url.startswith(("data:", "blob:")):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    pg.goto(server["url"])
    pg.wait_for_selector("#gen-run")
    yield pg
    context.close()


def screenshot(pg, name: str) -> None:
    folder = os.environ.get("RPFM_SERVE_SCREENSHOTS")
    if folder:
        png = Image.open(io.BytesIO(pg.screenshot(full_page=True))).convert("RGB")
        png.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(Path(folder) / f"serve_{name}.png",
                                                                        optimize=True)


def _image(pg, selector: str) -> np.ndarray:
    """The picture an <img> in the page shows, fetched from the server it came from."""
    src = pg.locator(f"{selector} img").first.get_attribute("src")
    body = pg.request.get(src).body()
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


def _upload(pg, elem_id: str, path: Path, shown: bool = True) -> None:
    """Upload through the component's own file input; with ``shown``, wait until the page displays the file."""
    pg.locator(f"#{elem_id} input[type=file]").set_input_files(str(path))
    if shown:
        pg.wait_for_function("([id, name]) => document.querySelector(`#${id} img`)?.src?.includes(name)",
                             arg=[elem_id, path.stem])


def _wait_text(pg, selector: str, pattern: str, timeout: int = TIMEOUT_MS) -> str:
    """Wait until the element's text matches ``pattern``; on timeout the failure shows the page's text."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        pg.wait_for_function("([s, p]) => { const e = document.querySelector(s); return e && new RegExp(p)"
                             ".test(e.innerText); }", arg=[selector, pattern], timeout=timeout)
    except PlaywrightTimeout:
        pytest.fail(f"{selector} never matched {pattern!r}; the page says:\n{pg.locator('body').inner_text()[:3000]}")
    return pg.locator(selector).inner_text()


# ============================================================================================ tests
def test_generate_from_uploaded_photo_and_pose_photo(page, files):
    _upload(page, "gen-source", files["person"])
    _upload(page, "gen-pose-photo", files["dancer"])
    _wait_text(page, "#gen-pose-source", "photo")
    page.locator("#gen-pose-source label:has-text('photo') input").check()
    page.click("#gen-run")
    report = _wait_text(page, "#gen-report", r"Generated|Error")
    assert report.startswith("Generated"), report
    assert "pose estimated" in report
    result = _image(page, "#gen-out-result")
    source = _image(page, "#gen-out-source")
    assert result.shape == source.shape and result.shape[0] >= 128
    assert np.abs(result.astype(float) - source.astype(float)).mean() > 5     # a generated image, not the input
    screenshot(page, "generate")


def test_bad_upload_shows_a_message_and_the_server_keeps_serving(page, files):
    _upload(page, "gen-source", files["notes"])
    page.click("#gen-run")
    report = _wait_text(page, "#gen-report", r"Error|Generated")
    assert "is not an image" in report, report
    # the same page, a good sample and a preset pose: the server still answers
    page.locator("#gen-presets button, #gen-presets .thumbnail-item").nth(1).click()
    page.locator(".gallery-item, [data-testid='examples'] button, .examples-holder button").first.click()
    page.wait_for_function("() => document.querySelector('#gen-source img')?.src?.includes('sample')")
    page.click("#gen-run")
    assert _wait_text(page, "#gen-report", r"^Generated").startswith("Generated")


def test_animate_keypoint_sequence_plays_in_the_page(page, files):
    page.get_by_role("tab", name="Animate").click()
    page.locator("#anim-keypoints input[type=file]").set_input_files(str(files["sequence"]))
    page.wait_for_selector("#anim-keypoints :text('sequence.json')")
    page.click("#anim-run")
    report = _wait_text(page, "#anim-report", r"frames/s|Error")
    assert "4 frames from the keypoint sequence" in report, report
    video = page.locator("#anim-out video")
    video.wait_for()
    page.wait_for_function("() => { const v = document.querySelector('#anim-out video'); "
                           "return v && v.readyState >= 2 && v.videoWidth > 0; }")
    screenshot(page, "animate")


def test_live_tab_turns_the_fake_camera_into_frames(page):
    page.get_by_role("tab", name="Live").click()
    page.locator("#live-camera :text('Click to Access Webcam')").click()     # Gradio's webcam widget
    page.locator("#live-camera button.capture-button").click()               # "Record": start streaming
    _wait_text(page, "#live-status", r"[1-9]\d* frames generated", timeout=120_000)     # the first frame
    text = _wait_text(page, "#live-status", r"([5-9]|\d\d+) frames generated", timeout=60_000)
    fps = float(re.search(r"([\d.]+) frames/s", text).group(1))
    out = _image(page, "#live-out")
    assert out.shape[1] == 2 * out.shape[0] and out.std() > 5                 # pose | generated, not blank
    assert fps > 0, text
    print(f"live tab: {fps:.1f} frames/s ({' '.join(text.split())})")
    screenshot(page, "live")


def test_oversized_upload_is_refused_by_the_server(server):
    import httpx

    from rpfm.serve.uploads import MAX_UPLOAD_MB

    big = b"\0" * ((MAX_UPLOAD_MB + 1) * 2**20)
    r = httpx.post(f"{server['url']}/gradio_api/upload", files={"files": ("big.png", big, "image/png")}, timeout=120)
    assert r.status_code == 413, (r.status_code, r.text[:200])
    assert httpx.get(server["url"], timeout=60).status_code == 200                # and it keeps serving


def test_nothing_left_the_machine_and_shutdown_cleans_up(server, outside):
    assert outside == [], f"the page tried to reach other hosts: {sorted(set(outside))[:5]}"
    tmp, proc = server["tmp"], server["proc"]
    assert tmp.is_dir() and any((tmp / "gradio").rglob("person*.png"))   # uploads went into the server's folder
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    assert not tmp.exists(), f"{tmp} is left behind"
    assert list(server["cwd"].iterdir()) == [], "rpfm serve wrote into its working folder"

"""`nat-gan studio` in a real browser: Debian's Chromium driven by Playwright (the pip package, no bundled browser).

One studio process serves four checkpoints (reduced StyleGAN2 and StyleNAT, a file that is not a checkpoint,
and a reduced class-conditional StyleGAN2 trained here on named classes) on a free port of 127.0.0.1. The test
changes seed and psi, checks that the image changes and that
the PNG the browser shows is byte-identical to what the captured `nat-gan sample` command writes, mixes
styles, uploads a photo and projects it for a few steps, switches checkpoints, looks at attention and A/B,
picks a class of the conditional checkpoint (the class control exists only there) and checks the image changes
and the captured command names the class,
sends bad input (a non-image upload, an out-of-range seed, the broken checkpoint) and checks that each is a
message in the page while the server keeps serving, that the page fetches nothing from outside 127.0.0.1 and
serves no file it was not given, and that Ctrl-C stops the server cleanly. Screenshots go to
``test-artifacts/studio/`` (``$NATGAN_TEST_ARTIFACTS`` overrides).

Outside CI the test skips, saying why, when Chromium, Playwright or Gradio is missing; in CI (``CI`` set) it
never skips: `.ci/setup` installs them, and a missing one fails the test.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from natgan.errors import NatGanError
from natgan.studio.browser import CHROMIUM, launch_chromium, start_studio
from test_latent_cli import family_checkpoint
from test_studio import conditional_checkpoint, labelled_dataset, run_command

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("NATGAN_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "studio"
TIMEOUT_MS = 120_000  # a loaded CPU box; nothing here is timed


def _missing() -> str | None:
    import importlib.util

    if not CHROMIUM.is_file():
        return f"{CHROMIUM} not found (apt-get install chromium)"
    for module in ("playwright", "gradio"):
        if importlib.util.find_spec(module) is None:
            return f"python package {module} not installed (pip install -e '.[studio,browser-test]')"
    return None


MISSING = _missing()
if MISSING and os.environ.get("CI"):
    pytest.fail(f"the studio browser test cannot run in CI: {MISSING} (.ci/setup installs it)", pytrace=False)
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"{MISSING} (in CI this fails)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("studio-browser")
    family_checkpoint("stylegan2", folder / "sg2.pt")
    family_checkpoint("stylenat", folder / "nat.pt")
    (folder / "broken.pt").write_bytes(b"this is not a checkpoint")
    conditional_checkpoint("stylegan2", labelled_dataset(folder / "labelled"), folder / "cond")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TMPDIR": str(folder)}
    log = folder / "studio.log"
    try:
        proc, url = start_studio(["sg2.pt", "nat.pt", "broken.pt", "cond/latest.pt", "--device", "cpu",
                                  "--random-lpips"], cwd=folder, log=log, env=env)
    except NatGanError as exc:
        pytest.fail(str(exc))
    yield {"url": url, "proc": proc, "folder": folder, "log": log}
    if proc.poll() is None:
        proc.kill()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="natgan-chromium-")
    with sync_playwright() as p:
        context = launch_chromium(p, Path(profile))
        context.set_default_timeout(TIMEOUT_MS)
        pg = context.new_page()
        requests: list[str] = []
        pg.on("request", lambda r: requests.append(r.url))
        pg.goto(server["url"])
        pg.wait_for_selector("#image img")
        pg.requests = requests
        yield pg
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


# ------------------------------------------------------------------------------------------------- helpers
def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


STEMS = {"image": "a", "image-b": "b", "attn": "attn"}  # the studio names each picture's PNG files


def src(page, elem: str = "image") -> str | None:
    img = page.locator(f"#{elem} img[src*='/{STEMS[elem]}-']")
    return img.get_attribute("src") if img.count() else None


def wait_src_change(page, old: str | None, elem: str = "image") -> str:
    selector = f"#{elem} img[src*='/{STEMS[elem]}-']"
    page.wait_for_function("([sel, old]) => { const i = document.querySelector(sel); "
                           "return i && i.getAttribute('src') !== old; }", arg=[selector, old or ""])
    return page.locator(selector).get_attribute("src")


def wait_text(page, elem: str, pattern: str) -> str:
    page.wait_for_function("([sel, pat]) => { const e = document.querySelector(sel); "
                           "return e && new RegExp(pat).test(e.innerText); }", arg=[f"#{elem}", pattern])
    return page.locator(f"#{elem}").inner_text()


def set_number(page, elem: str, value) -> None:
    page.locator(f"#{elem} input[type=number]").first.fill(str(value))


def rendered(page, pattern: str) -> str:
    """Wait until the status line describes the new frame, then return the image's address."""
    wait_text(page, "status", pattern)
    return src(page)


def open_panel(page, elem: str) -> None:
    panel = page.locator(f"#{elem}")
    if panel.locator("input, img, button.primary, textarea").count() == 0 or not \
            panel.locator("input, textarea").first.is_visible():
        panel.locator("button").first.click()


def choose(page, elem: str, label: str) -> None:
    page.locator(f"#{elem} input").click()
    page.get_by_role("option", name=label, exact=True).click()


def fetch(page, url: str) -> bytes:
    response = page.request.get(url)
    assert response.ok, (url, response.status)
    return response.body()


def pixels(data: bytes) -> np.ndarray:
    import io

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def capture_and_check(page, workdir: Path, capsys, shown: bytes) -> str:
    """Click capture, download the files as a user would, run the command, compare the PNG it writes."""
    old_command = page.locator("#command textarea").input_value()
    page.locator("#capture").click()
    page.wait_for_function("([sel, old]) => { const t = document.querySelector(sel); "
                           "return t && t.value && t.value !== old; }", arg=["#command textarea", old_command])
    command = page.locator("#command textarea").input_value()
    links = page.locator("#capture-files a")
    page.wait_for_function("() => document.querySelectorAll('#capture-files a').length >= 2")
    workdir.mkdir(parents=True, exist_ok=True)
    for i in range(links.count()):
        href = links.nth(i).get_attribute("href")
        name = Path(re.sub(r"\?.*$", "", href)).name
        (workdir / name).write_bytes(fetch(page, href))
    written = run_command(command, workdir, capsys)
    assert len(written) == 1
    if written[0].read_bytes() != shown:
        (ARTIFACTS / "mismatch-shown.png").write_bytes(shown)
        shutil.copy(written[0], ARTIFACTS / "mismatch-written.png")
        pytest.fail(f"the PNG in the browser differs from what `{command}` writes (both in {ARTIFACTS})")
    assert (workdir / written[0].name).read_bytes() == shown  # the downloaded PNG as well
    return command


# --------------------------------------------------------------------------------------------------- tests
def test_studio_in_a_real_browser(server, page, tmp_path, capsys):
    try:
        walk_through_the_page(server, page, tmp_path, capsys)
    except BaseException:
        shot(page, "failure")  # the page as it was when the test failed, beside the server's log
        shutil.copy(server["log"], ARTIFACTS / "studio.log")
        raise


def walk_through_the_page(server, page, tmp_path, capsys):
    url = server["url"]
    first = src(page)
    assert "stylegan2" in page.locator("#ckpt-info").inner_text()
    assert page.locator("#class").is_hidden()  # an unconditional checkpoint has no class control
    shot(page, "01-start")

    # seed and psi change the image; the PNG shown is what the captured command writes
    set_number(page, "seed", 7)
    after_seed = rendered(page, r"seed 7 · psi 1\b")
    assert not np.array_equal(pixels(fetch(page, first)), pixels(fetch(page, after_seed)))
    set_number(page, "psi", 0.5)
    after_psi = rendered(page, r"seed 7 · psi 0\.5")
    shown = fetch(page, after_psi)
    assert not np.array_equal(pixels(fetch(page, after_seed)), pixels(shown))
    command = capture_and_check(page, tmp_path / "cap1", capsys, shown)
    assert "--seeds 7" in command and "--trunc 0.5" in command
    assert re.search(r"\d+(\.\d+)? ms", page.locator("#status").inner_text())
    shot(page, "02-seed-psi-capture")

    # a fractional seed: captured as a latent file
    set_number(page, "seed", 7.25)
    frac = rendered(page, r"seed 7\.25 · psi 0\.5")
    command = capture_and_check(page, tmp_path / "cap2", capsys, fetch(page, frac))
    assert "--w seed7.25-w.npz" in command

    # style mixing
    open_panel(page, "acc-style-mixing")
    set_number(page, "mix-seed", 3)
    page.locator("#mix-on input").check()
    mixed = rendered(page, r"seed 7\.25 · psi 0\.5 · mixed with seed 3")
    assert not np.array_equal(pixels(fetch(page, frac)), pixels(fetch(page, mixed)))
    command = capture_and_check(page, tmp_path / "cap3", capsys, fetch(page, mixed))
    assert "mix3" in command
    shot(page, "03-style-mixing")

    # bad input: an out-of-range seed is a message, the image stays, the server keeps serving
    set_number(page, "seed", -5)
    assert "error: seed -5" in wait_text(page, "status", "error")
    assert src(page) == mixed
    assert "Traceback" not in page.content()
    shot(page, "04-bad-seed")
    set_number(page, "seed", 12)
    after_bad = rendered(page, r"seed 12 ·")

    # projection: a non-image upload is a message; an image projects with live progress, then drives the page
    open_panel(page, "acc-projection")
    (tmp_path / "notes.txt").write_text("not an image")
    page.locator("#upload input[type=file]").set_input_files(str(tmp_path / "notes.txt"))
    page.wait_for_function("() => document.querySelector('#upload').innerText.includes('notes.txt')")
    page.locator("#project").click()
    assert "not a readable image" in wait_text(page, "proj-status", "error")
    shot(page, "05-bad-upload")
    photo = pixels(fetch(page, after_bad))
    Image.fromarray(photo).resize((40, 48)).save(tmp_path / "photo.png")
    page.locator("#upload button[aria-label='Clear']").first.click()
    page.wait_for_function("() => !document.querySelector('#upload').innerText.includes('notes.txt')")
    page.locator("#upload input[type=file]").set_input_files(str(tmp_path / "photo.png"))
    page.wait_for_function("() => document.querySelector('#upload').innerText.includes('photo.png')")
    set_number(page, "proj-steps", 4)
    page.locator("#project").click()
    assert "LPIPS" in wait_text(page, "proj-status", r"LPIPS \d|error: (?!.*notes\.txt)")
    projected = wait_text(page, "status", "projected latent")
    assert "projected latent" in projected
    proj_src = src(page)
    command = capture_and_check(page, tmp_path / "cap4", capsys, fetch(page, proj_src))
    assert "--w projected-mix3.npz" in command  # style mixing is still on: it applies to the projection too
    shot(page, "06-projection")
    page.locator("#unproject").click()
    wait_text(page, "status", "seed 12")

    # switching checkpoints keeps the latent; a broken checkpoint is a message and the old one stays
    before_switch = src(page)
    choose(page, "ckpt", "broken.pt")
    assert "broken.pt" in wait_text(page, "status", "error: .*broken.pt")
    assert "stylegan2" in page.locator("#ckpt-info").inner_text()
    shot(page, "07-broken-checkpoint")
    choose(page, "ckpt", "nat.pt")
    wait_text(page, "ckpt-info", "stylenat")
    nat = rendered(page, r"^nat\.pt · .* · seed 12 · psi 0\.5 · mixed with seed 3")  # the latent stays
    assert nat != before_switch
    capture_and_check(page, tmp_path / "cap5", capsys, fetch(page, nat))

    # a SeFa direction slider edits the latent; still reproducible
    open_panel(page, "acc-directions")
    set_number(page, "dir-0", 3)
    edited = rendered(page, r"directions 0: \+3")
    assert not np.array_equal(pixels(fetch(page, nat)), pixels(fetch(page, edited)))
    capture_and_check(page, tmp_path / "cap6", capsys, fetch(page, edited))
    shot(page, "08-direction")

    # attention: switch it on, then click a pixel
    open_panel(page, "acc-attention")
    page.locator("#attn-on input").check()
    attn = wait_src_change(page, None, "attn")
    assert "mean query" in wait_text(page, "attn-caption", "query")
    page.locator("#image img").click()  # the centre pixel
    wait_src_change(page, attn, "attn")
    assert "marked pixel" in wait_text(page, "attn-caption", "marked pixel")
    shot(page, "09-attention")

    # A/B: the same latent on the other checkpoint
    open_panel(page, "acc-AB")
    choose(page, "ckpt-b", "sg2.pt")
    wait_src_change(page, None, "image-b")
    assert re.search(r"\d+(\.\d+)? ms", wait_text(page, "status-b", "ms"))
    shot(page, "10-ab")

    # a class-conditional checkpoint: the class control appears, choosing a class regenerates the image, and the
    # captured command names the class (quoted: the name has a space)
    choose(page, "ckpt", "cond/latest.pt")
    wait_text(page, "ckpt-info", "class-conditional: 3 classes")
    page.locator("#class").wait_for(state="visible")
    rendered(page, r"^cond/latest\.pt · .* · seed 12 · psi 0\.5 · class cat · mixed with seed 3")
    page.locator("#mix-on input").uncheck()
    cat = rendered(page, r"^cond/latest\.pt · .* · seed 12 · psi 0\.5 · class cat(?!.*mixed)")
    assert "class cat left out" in wait_text(page, "status-b", "left out")  # B (sg2.pt) is unconditional
    choose(page, "class", "2: snow leopard")
    leopard = rendered(page, r"seed 12 · psi 0\.5 · class snow leopard")
    assert not np.array_equal(pixels(fetch(page, cat)), pixels(fetch(page, leopard)))
    command = capture_and_check(page, tmp_path / "cap7", capsys, fetch(page, leopard))
    assert "--seeds 12" in command and "--trunc 0.5" in command and "--class 'snow leopard'" in command
    shot(page, "11-class")
    set_number(page, "seed", 12.5)  # a latent file, in the chosen class
    frac = rendered(page, r"seed 12\.5 · psi 0\.5 · class snow leopard")
    command = capture_and_check(page, tmp_path / "cap8", capsys, fetch(page, frac))
    assert "--w seed12.5-w.npz" in command and "--class 'snow leopard'" in command
    page.locator("#class input").fill("dog")  # a typed name, as `sample --class` reads it
    page.locator("#class input").press("Enter")
    dog = rendered(page, r"seed 12\.5 · psi 0\.5 · class dog")
    assert not np.array_equal(pixels(fetch(page, frac)), pixels(fetch(page, dog)))
    choose(page, "ckpt", "sg2.pt")  # back to an unconditional checkpoint: the control goes away
    wait_text(page, "ckpt-info", "stylegan2")
    page.locator("#class").wait_for(state="hidden")
    rendered(page, r"^sg2\.pt · .* · seed 12\.5 · psi 0\.5 · class dog left out")

    # nothing outside 127.0.0.1 was requested; files the studio was not given are not served
    outside = [u for u in page.requests if not u.startswith(url) and not u.startswith("data:")
               and not u.startswith("blob:")]
    assert outside == []
    for path in ("/etc/passwd", str(server["folder"] / "sg2.pt")):
        assert not page.request.get(f"{url}gradio_api/file={path}").ok


def test_ctrl_c_stops_the_studio_cleanly(server, page):
    proc = server["proc"]
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    out = server["log"].read_text()
    assert proc.returncode == 0, out
    assert "studio stopped" in out and "Traceback" not in out
    assert not list(Path(server["folder"]).glob("natgan-studio-*"))  # its work folder is gone

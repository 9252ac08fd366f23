"""Responsiveness of `nat-gan studio`: time from a slider change to the new image shown in a real browser.

    .venv/bin/python benchmarks/bench_studio.py demo/run/latest.pt --changes 40 --json
    .venv/bin/python benchmarks/bench_studio.py CKPT --screenshot docs/figures/studio.png --attention --changes 3

The studio runs as the user runs it (its own process, ``--device`` as given), Debian's Chromium is driven by
Playwright (:mod:`natgan.studio.browser`). Each change moves the truncation slider (the range input, as a
drag does) to a new value and measures, inside the page, from the input event to the moment the new PNG has
loaded (``img.complete``): the page's event, the queue, rendering, PNG encoding, the file transfer and the
decode. The first change (truncation centre, first forward pass) is a warm-up and is not counted. The
server-side generation time the page prints (``ms``) is reported beside it, so the two can be compared.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MEASURE_JS = """async ([value]) => {
  const sel = "#image img[src*='/a-']";
  const old = document.querySelector(sel)?.getAttribute('src');
  const range = document.querySelector('#psi input[type=range]');
  const t0 = performance.now();
  const setter = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
  setter.call(range, String(value));
  range.dispatchEvent(new Event('input', {bubbles: true}));
  return await new Promise(resolve => {
    const check = () => {
      const img = document.querySelector(sel);
      if (img && img.getAttribute('src') !== old && img.complete && img.naturalWidth > 0)
        resolve(performance.now() - t0);
      else requestAnimationFrame(check);
    };
    check();
  });
}"""


def measure(ckpt: Path, *, changes: int, device: str, screenshot: Path | None, seed: float,
            attention: bool = False) -> dict:
    from playwright.sync_api import sync_playwright

    from natgan.studio.browser import launch_chromium, start_studio

    work = Path(tempfile.mkdtemp(prefix="natgan-bench-studio-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(work)}
    proc, url = start_studio([str(ckpt.resolve()), "--device", device], cwd=work, log=work / "studio.log", env=env)
    try:
        with sync_playwright() as p:
            context = launch_chromium(p, work / "profile", width=1280, height=900)
            context.set_default_timeout(300_000)
            page = context.new_page()
            page.goto(url)
            page.wait_for_selector("#image img[src*='/a-']")
            if seed:
                page.locator("#seed input[type=number]").fill(str(seed))
                page.wait_for_function("() => document.querySelector('#status').innerText.includes('seed %g ')"
                                       % seed)
            values = [round(0.3 + 0.7 * ((k * 37) % 50) / 50, 2) for k in range(changes + 1)]
            values = [v if v != 1.0 else 0.99 for v in values]
            browser_ms, server_ms = [], []
            for k, value in enumerate(values if changes else []):
                elapsed = page.evaluate(MEASURE_JS, [value])
                status = page.locator("#status").inner_text()
                found = re.search(r"([\d.]+) ms", status)
                if k:  # the first change computes the truncation centre: a warm-up
                    browser_ms.append(elapsed)
                    server_ms.append(float(found.group(1)) if found else float("nan"))
            if screenshot is not None:
                if attention:  # the attention panel open, with the map of the centre pixel
                    page.locator("#acc-attention button").first.click()
                    page.locator("#attn-on input").check()
                    page.wait_for_selector("#attn img[src*='/attn-']")
                    page.locator("#image img").click()
                    page.wait_for_function("() => document.querySelector('#attn-caption').innerText"
                                           ".includes('marked pixel')")
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
            context.close()
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    result = {"checkpoint": str(ckpt), "device": device, "changes": len(browser_ms),
              "load_average_1min": os.getloadavg()[0], "cpus": os.cpu_count()}
    if browser_ms:
        q = statistics.quantiles(browser_ms, n=10) if len(browser_ms) >= 2 else [browser_ms[0]] * 9
        result.update(browser_ms_median=statistics.median(browser_ms), browser_ms_p10=q[0], browser_ms_p90=q[-1],
                      server_ms_median=statistics.median(server_ms))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt", type=Path)
    parser.add_argument("--changes", type=int, default=40, help="slider changes timed (after one warm-up)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=float, default=0.0, help="seed shown while measuring / in the screenshot")
    parser.add_argument("--screenshot", type=Path, help="save the page (after the changes) to this PNG")
    parser.add_argument("--attention", action="store_true", help="screenshot with the attention panel open")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = measure(args.ckpt, changes=args.changes, device=args.device, screenshot=args.screenshot,
                     seed=args.seed, attention=args.attention)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key}: {value:.1f}" if isinstance(value, float) else f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

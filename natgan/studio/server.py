"""Serving the studio page: offline, local by default, one generation at a time, clean shutdown.

Why these settings: the studio runs where the checkpoint is (often a cluster node reached through
``ssh -L``), which may have no internet. Gradio's analytics and version check are switched off, the
Hugging Face hub is told it is offline, the page uses system fonts (no font CDN) and server-side rendering
(which needs Node) is off, so the page loads with no request leaving the machine. Gradio's upload and
file cache is the studio's own temporary folder, removed at exit; Gradio serves only files the page
produced (no ``allowed_paths``), with uploads capped in size.
"""

from __future__ import annotations

import getpass
import importlib.util
import ipaddress
import os
import shutil
import signal
import socket
import threading
from pathlib import Path
from typing import Callable

from natgan.errors import ConfigError

EXTRA_HINT = 'nat-gan studio needs the web extra: pip install "nat-gan[studio]" (Gradio)'
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def require_gradio() -> None:
    """A one-line ConfigError naming the extra when Gradio is not installed (checked without importing it)."""
    try:
        found = importlib.util.find_spec("gradio") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ConfigError(EXTRA_HINT)


def is_local(host: str) -> bool:
    if host in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_port(host: str, port: int) -> int:
    """``port`` (0 = any free one), refused with one line when it is taken or not a port."""
    if port == 0:
        return free_port(host)
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port {port}: expected 1-65535 (or 0 for any free port)")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"--port {port}: cannot listen on {host}:{port} ({exc.strerror}); choose another "
                              f"port, or 0 for any free one") from None
    return port


def ssh_hint(port: int) -> str:
    """The line to type on a laptop to reach a studio on this machine."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "USER"
    return f"ssh -N -L {port}:127.0.0.1:{port} {user}@{socket.gethostname()}"


def offline_environment(workdir: Path) -> None:
    """Environment for Gradio, set before it is imported (it reads some of these at import time)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["GRADIO_TEMP_DIR"] = str(workdir / "gradio")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ["GRADIO_SSR_MODE"] = "False"


def serve(studio, *, host: str, port: int, initial: int, failures: list[str], say: Callable[[str], None],
          stop: threading.Event | None = None, max_upload_bytes: int) -> None:
    """Serve until Ctrl-C / SIGTERM (or ``stop`` is set), then close the server and remove the work folder."""
    offline_environment(studio.workdir)
    import gradio as gr

    from natgan.studio.app import CSS, build_page

    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    demo = build_page(studio, initial, failures)
    demo.queue(default_concurrency_limit=1, max_size=64)
    stop = stop or threading.Event()
    previous = {}
    try:
        demo.launch(server_name=host, server_port=port, prevent_thread_lock=True, share=False, inbrowser=False,
                    show_error=False, quiet=True, max_file_size=max_upload_bytes, enable_monitoring=False,
                    ssr_mode=False, theme=theme, css=CSS, footer_links=[])
        say(f"nat-gan studio: http://{'[' + host + ']' if ':' in host else host}:{port}/  (Ctrl-C stops it)")
        if is_local(host):
            say(f"from a laptop: {ssh_hint(port)}   then open http://127.0.0.1:{port}/")
        if threading.current_thread() is threading.main_thread():  # after launch: Ctrl-C / SIGTERM end the wait
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, lambda *_: stop.set())
        while not stop.wait(0.5):
            pass
    finally:
        try:
            demo.close()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            shutil.rmtree(studio.workdir, ignore_errors=True)
    say("nat-gan studio stopped")

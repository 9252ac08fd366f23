"""The studio page (Gradio Blocks): controls in, :class:`~natgan.studio.session.Studio` calls, pictures out.

Only layout and wiring live here. Every image is handed to Gradio as a PNG file written by
:func:`natgan.sampling.export.save_png` (Gradio would re-encode arrays, as lossy WebP by default), so the
image in the browser is the file ``nat-gan sample`` writes. Errors from the library become one line in
the page's status box; anything unexpected is logged on the server and shown as one line too. The class
control is shown only while the checkpoint is class-conditional; every view renders in its class.
"""

from __future__ import annotations

import collections
import itertools
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from natgan.errors import NatGanError
from natgan.noise_modes import NOISE_MODES
from natgan.sampling.export import save_png
from natgan.studio.session import TOP_DIRECTIONS, Frame, Studio, fraction
from natgan.studio.spec import BLEND_SPACES, MAX_STRENGTH, PSI_RANGE, LatentSpec, class_of_control
from natgan.latent.store import StoredLatents

NONE_B = "(none)"
KEEP_FRAMES = 8  # frames remembered per tab, so a capture finds the one on screen
KEEP_FILES = 256  # PNGs written for the page that are kept on disk
CSS = """
#image img, #image-b img, #attn img, #proj-image img {
  image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain; }
#status, #status-b { min-height: 1.5em; }
"""


@dataclass
class PageState:
    """Per browser tab: the latest frame (for capture and attention), a projected latent, the clicked pixel."""

    frame: Frame | None = None
    shown: dict[str, Frame] = field(default_factory=dict)  # PNG name -> its frame (the latest few)
    projected: StoredLatents | None = None
    where: tuple[float, float] | None = None
    index: int = 0
    notes: list[str] = field(default_factory=list)  # what a switch of checkpoint said, shown with its frame
    notes_for: str | None = None                     # the frame the notes were shown with (None: not yet)


class Page:
    def __init__(self, studio: Studio, initial: int, failures: list[str]):
        self.studio = studio
        self.initial = initial
        self.failures = failures
        self._frames = itertools.count()
        self._written: collections.deque[Path] = collections.deque()
        (studio.workdir / "frames").mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------------------------------ helpers
    def png(self, image, stem: str) -> str:
        """Write a PNG the page shows (a fresh name each time, so the browser never shows a stale cache).

        Gradio serves a copy from its own cache (pruned by ``delete_cache``), so only the latest few originals
        are kept: a long session does not fill the disk.
        """
        path = save_png(self.studio.workdir / "frames" / f"{stem}-{next(self._frames):06d}.png", image)
        self._written.append(path)
        while len(self._written) > KEEP_FILES:
            self._written.popleft().unlink(missing_ok=True)
        return str(path)

    @staticmethod
    def message(exc: BaseException) -> str:
        if isinstance(exc, NatGanError):
            return f"error: {exc}"
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        first = (str(exc).splitlines() or [""])[0]
        return f"error: unexpected {type(exc).__name__}: {first} (details in the server log)"

    def spec(self, state: PageState, klass, seed, psi, noise, blend, mix_on, mix_seed, mix_layers,
             strengths) -> LatentSpec:
        return LatentSpec(seed=seed if seed is not None else float("nan"), blend=blend, psi=psi, noise_mode=noise,
                          mix_seed=mix_seed if mix_on else None, mix_layers=mix_layers if mix_on else "",
                          strengths=tuple(strengths), projected=state.projected,
                          label=class_of_control(klass, self.studio.model(state.index).classes))

    @staticmethod
    def class_choices(names: list[str]) -> list[tuple[str, int]]:
        """The class drop-down's entries: ``(shown text, class index)``; the index is shown beside a name."""
        return [(name if name == str(k) else f"{k}: {name}", k) for k, name in enumerate(names)]

    def info_markdown(self, index: int) -> str:
        model = self.studio.model(index)
        info = model.info()
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in info["metrics"].items()) or "none recorded"
        f = model.features
        lines = [f"**{info['model']}** · {info['resolution']} px · step {info['step']} · "
                 f"{'EMA' if info['ema'] else 'raw'} weights · {info['latent']} · device {self.studio.device}",
                 f"metrics: {metrics}"]
        if model.classes:
            shown = ", ".join(model.classes[:8]) + (", ..." if len(model.classes) > 8 else "")
            lines.append(f"class-conditional: {len(model.classes)} classes ({shown})")
        for name, reason in (("style mixing", f.mixing), ("noise mode", f.noise), ("attention", f.attention)):
            if reason:
                lines.append(f"{name}: off ({reason})")
        return "  \n".join(lines)

    # --------------------------------------------------------------------------------------- callbacks
    def refresh(self, state: PageState, ckpt_b, attn_on, level, block, head, klass, seed, psi, noise, blend, mix_on,
                mix_seed, mix_layers, *strengths):
        state = state or PageState(index=self.initial)
        outputs = dict(image=gr.update(), status="", image_b=gr.update(), status_b="", attn=gr.update(),
                       attn_caption="", command="", files=None)  # a capture belongs to the frame it was made of
        try:
            spec = self.spec(state, klass, seed, psi, noise, blend, mix_on, mix_seed, mix_layers, strengths)
            frame = self.studio.render(state.index, spec)
            state.frame = frame
            shown = "projected latent" if spec.projected is not None else f"seed {frame.spec.seed:g}"
            outputs["image"] = self.png(frame.image, "a")
            state.shown[Path(outputs["image"]).name] = frame
            for old in list(state.shown)[:-KEEP_FRAMES]:
                del state.shown[old]
            parts = [self.studio.entries[frame.index].label, f"{frame.ms:.1f} ms", shown, f"psi {frame.spec.psi:g}"]
            if frame.spec.label is not None:
                parts.append(f"class {self.studio.model(frame.index).classes[frame.spec.label]}")
            if frame.spec.mixing:
                parts.append(f"mixed with seed {frame.spec.mix_seed} (layers {frame.spec.mix_layers})")
            if any(frame.spec.strengths):
                parts.append("directions " + ", ".join(f"{k}: {v:+g}" for k, v in enumerate(frame.spec.strengths)
                                                       if v))
            # a switch's notes stay while the page re-renders the same frame (the checkpoint drop-down reports a
            # choice more than once, and each report re-renders); the next other frame clears them
            shown_as = f"{frame.index}:{frame.spec!r}"
            if state.notes_for not in (None, shown_as):
                state.notes = []
            outputs["status"] = " · ".join(parts + state.notes + frame.notes)
            state.notes_for = shown_as
        except Exception as exc:  # noqa: BLE001 - every failure becomes a line in the page
            outputs["status"] = self.message(exc)
            return state, *outputs.values()
        if ckpt_b and ckpt_b != NONE_B:
            try:
                b = self.studio.render_b(self.studio.index_of(ckpt_b), spec, source=state.index)
                outputs["image_b"] = self.png(b.image, "b")
                outputs["status_b"] = " · ".join([f"{b.ms:.1f} ms", ckpt_b, *b.notes])
            except Exception as exc:  # noqa: BLE001
                outputs["status_b"] = self.message(exc)
        else:
            outputs["image_b"] = None
        if attn_on:
            outputs["attn"], outputs["attn_caption"] = self._attention(state, level, block, head)
        return state, *outputs.values()

    def _attention(self, state: PageState, level, block, head):
        try:
            view = self.studio.attention(state.frame, level=int(level) if level else None, block=int(block or 0),
                                         head=int(head or 0), where=state.where)
            caption = (f"{view.caption} · levels {', '.join(map(str, view.levels))} · {view.blocks} block(s), "
                       f"{view.heads} head(s) at {view.level}")
            return self.png(view.image, "attn"), caption
        except Exception as exc:  # noqa: BLE001
            return gr.update(value=None), self.message(exc)

    def click(self, state: PageState, image, level, block, head, evt: gr.SelectData):
        frame = self.displayed(state, image)
        if frame is None:
            return state, gr.update(), "render an image first"
        state.frame = frame
        try:
            state.where = fraction(evt.index, frame.image.shape[0])
        except Exception as exc:  # noqa: BLE001
            return state, gr.update(), self.message(exc)
        image, caption = self._attention(state, level, block, head)
        return state, image, caption

    def switch(self, state: PageState, label, klass, seed, psi, noise, blend, mix_on, mix_seed, mix_layers,
               *strengths):
        state = state or PageState(index=self.initial)
        zero = [0.0] * TOP_DIRECTIONS
        try:
            index = self.studio.index_of(label)
            if index == state.index:  # the drop-down reports a choice more than once: switched already
                return (state, *[gr.update()] * (7 + TOP_DIRECTIONS))
            spec = self.spec(state, klass, seed, psi, noise, blend, mix_on, mix_seed, mix_layers, strengths)
            self.studio.model(index)
            kept, notes = self.studio.switch(spec, index, source=state.index)
        except Exception as exc:  # noqa: BLE001 - a checkpoint that fails to load: say so, keep the current one
            current = self.studio.entries[state.index].label
            state.notes, state.notes_for = [self.message(exc)], None  # the refresh that follows keeps saying it
            return (state, gr.update(value=current), state.notes[0], gr.update(), gr.update(), gr.update(),
                    gr.update(), gr.update(), *[gr.update()] * TOP_DIRECTIONS)
        state.index, state.projected, state.notes, state.notes_for = index, kept.projected, notes, None
        state.where = None
        f = self.studio.model(index).features
        names = self.studio.model(index).classes
        return (state, gr.update(), "", self.info_markdown(index),
                gr.update(choices=self.class_choices(names), value=kept.label if names else None, visible=bool(names)),
                gr.update(value=bool(kept.mixing and mix_on), interactive=f.mixing is None),
                gr.update(value=kept.noise_mode if f.noise is None else "const", interactive=f.noise is None),
                gr.update(interactive=f.attention is None, **({} if f.attention is None else {"value": False})),
                *zero)

    def project(self, state: PageState, upload, steps, space, klass):
        state = state or PageState(index=self.initial)
        if not upload:
            yield state, gr.update(), "error: choose an image file to project first"
            return
        try:
            target = self.studio.load_target(upload, state.index)
            label = class_of_control(klass, self.studio.model(state.index).classes)
            for update in self.studio.project(state.index, target, steps=int(steps or 0), space=space, label=label,
                                              every=max(1, int(steps or 1) // 20)):
                text = f"projection step {update.step}/{update.steps}"
                if update.latents is not None:
                    state.projected = update.latents
                    text += f" · LPIPS {update.lpips:.4f} · the latent now comes from the projection"
                yield state, self.png(update.image, "proj"), text
        except Exception as exc:  # noqa: BLE001
            yield state, gr.update(), self.message(exc)

    def unproject(self, state: PageState):
        state = state or PageState(index=self.initial)
        state.projected = None
        return state, "back to seeds"

    @staticmethod
    def displayed(state: PageState, image) -> Frame | None:
        """The frame whose PNG the page shows (events can overtake each other; the picture is the truth)."""
        if state is None:
            return None
        if image:
            return state.shown.get(Path(image).name)
        return state.frame

    def capture(self, state: PageState, image):
        frame = self.displayed(state, image)
        if frame is None:
            return gr.update(), "", "error: nothing rendered yet"
        try:
            cap = self.studio.capture(frame)
        except Exception as exc:  # noqa: BLE001
            return gr.update(), "", self.message(exc)
        return [str(cap.png), str(cap.latents)], cap.command, f"captured {cap.name}"

    # ------------------------------------------------------------------------------------------ layout
    def build(self) -> gr.Blocks:
        labels = [e.label for e in self.studio.entries]
        model = self.studio.model(self.initial)
        res = int(model.G.resolution)
        with gr.Blocks(title="nat-gan studio", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
            state = gr.State(PageState(index=self.initial))
            gr.Markdown("## nat-gan studio")
            with gr.Row():
                with gr.Column(scale=1, min_width=320):
                    with gr.Accordion("network", elem_id="acc-network", open=True):
                        ckpt = gr.Dropdown(labels, value=labels[self.initial], label="checkpoint", elem_id="ckpt")
                        info = gr.Markdown(self.info_markdown(self.initial), elem_id="ckpt-info")
                        if self.failures:
                            gr.Markdown("not loaded: " + "; ".join(self.failures), elem_id="load-failures")
                    with gr.Accordion("latent", elem_id="acc-latent", open=True):
                        names = model.classes
                        klass = gr.Dropdown(self.class_choices(names), value=self.studio.first_class if names else None,
                                            label="class (the checkpoint is class-conditional)", elem_id="class",
                                            visible=bool(names), filterable=True, allow_custom_value=True)
                        seed = gr.Number(0, label="seed (a fraction blends the two neighbouring seeds)",
                                         elem_id="seed", step=0.05)
                        psi = gr.Slider(*PSI_RANGE, value=1.0, step=0.05, label="truncation psi", elem_id="psi")
                        noise = gr.Radio(list(NOISE_MODES), value="const", label="noise mode", elem_id="noise",
                                         interactive=model.features.noise is None)
                        blend = gr.Radio(list(BLEND_SPACES), value="w", label="fractional seeds blend in",
                                         elem_id="blend")
                    with gr.Accordion("style mixing", elem_id="acc-style-mixing", open=False):
                        mix_on = gr.Checkbox(False, label="mix styles", elem_id="mix-on",
                                             interactive=model.features.mixing is None)
                        mix_seed = gr.Number(1, label="second seed", precision=0, elem_id="mix-seed")
                        n = getattr(model.G, "n_latent", None) or 1
                        mix_layers = gr.Textbox(f"{n // 2}-{n - 1}", label="layers taken from the second seed",
                                                elem_id="mix-layers")
                    with gr.Accordion("directions (SeFa, computed once per checkpoint)", elem_id="acc-directions",
                                      open=False):
                        sliders = [gr.Slider(-MAX_STRENGTH / 10, MAX_STRENGTH / 10, value=0.0, step=0.1,
                                             label=f"component {k}", elem_id=f"dir-{k}")
                                   for k in range(TOP_DIRECTIONS)]
                    with gr.Accordion("projection", elem_id="acc-projection", open=False):
                        upload = gr.File(label="photo (an image, at most 20 MiB)", type="filepath",
                                         elem_id="upload")
                        steps = gr.Number(100, label="steps", precision=0, elem_id="proj-steps")
                        space = gr.Radio(["w", "wplus"], value="w", label="space", elem_id="proj-space")
                        with gr.Row():
                            run_proj = gr.Button("project", elem_id="project")
                            back = gr.Button("back to seeds", elem_id="unproject")
                        proj_image = gr.Image(label="projection", type="filepath", elem_id="proj-image",
                                              height=192, interactive=False)
                        proj_status = gr.Markdown(elem_id="proj-status")
                    with gr.Accordion("A/B", elem_id="acc-AB", open=False):
                        ckpt_b = gr.Dropdown([NONE_B, *labels], value=NONE_B, label="B: same latent on",
                                             elem_id="ckpt-b")
                with gr.Column(scale=2):
                    with gr.Row():
                        with gr.Column():
                            image = gr.Image(label=f"A ({res} px; click a pixel for its attention)",
                                             type="filepath", elem_id="image", height=384, interactive=False)
                            status = gr.Markdown(elem_id="status")
                        with gr.Column():
                            image_b = gr.Image(label="B", type="filepath", elem_id="image-b", height=384,
                                               interactive=False)
                            status_b = gr.Markdown(elem_id="status-b")
                    with gr.Accordion("attention", elem_id="acc-attention", open=False):
                        with gr.Row():
                            attn_on = gr.Checkbox(False, label="show attention", elem_id="attn-on",
                                                  interactive=model.features.attention is None)
                            level = gr.Number(0, label="level (px; 0 = the finest)", precision=0,
                                              elem_id="attn-level")
                            block = gr.Number(0, label="block", precision=0, elem_id="attn-block")
                            head = gr.Number(0, label="head", precision=0, elem_id="attn-head")
                        attn = gr.Image(label="attention", type="filepath", elem_id="attn", height=384,
                                        interactive=False)
                        attn_caption = gr.Markdown(elem_id="attn-caption")
                    with gr.Accordion("capture", elem_id="acc-capture", open=True):
                        cap_button = gr.Button("capture PNG + latent + command", elem_id="capture")
                        cap_files = gr.File(label="files", file_count="multiple", elem_id="capture-files",
                                            interactive=False)
                        cap_status = gr.Markdown(elem_id="capture-status")
                        command = gr.Textbox(label="the nat-gan sample command that writes this PNG "
                                                   "(run it where the .npz is)", elem_id="command",
                                             buttons=["copy"], interactive=False)

            latent_in = [klass, seed, psi, noise, blend, mix_on, mix_seed, mix_layers, *sliders]
            refresh_in = [state, ckpt_b, attn_on, level, block, head, *latent_in]
            refresh_out = [state, image, status, image_b, status_b, attn, attn_caption, command, cap_files]
            queued = dict(concurrency_limit=1, concurrency_id="device", trigger_mode="always_last")
            for control in (klass, seed, psi, noise, blend, mix_on, mix_seed, *sliders, ckpt_b, attn_on, level,
                            block, head):
                control.input(self.refresh, refresh_in, refresh_out, **queued)
            for event in (mix_layers.submit, mix_layers.blur):  # not per keystroke: "0-" is half a range
                event(self.refresh, refresh_in, refresh_out, **queued)
            ckpt.input(self.switch, [state, ckpt, *latent_in],
                       [state, ckpt, status, info, klass, mix_on, noise, attn_on, *sliders],
                       **queued).then(self.refresh, refresh_in, refresh_out, **queued)
            image.select(self.click, [state, image, level, block, head], [state, attn, attn_caption], **queued)
            run_proj.click(self.project, [state, upload, steps, space, klass], [state, proj_image, proj_status],
                           **queued).then(self.refresh, refresh_in, refresh_out, **queued)
            back.click(self.unproject, [state], [state, proj_status]).then(self.refresh, refresh_in, refresh_out,
                                                                            **queued)
            cap_button.click(self.capture, [state, image], [cap_files, command, cap_status], **queued)
            demo.load(self.refresh, refresh_in, refresh_out, **queued)
        return demo


def build_page(studio: Studio, initial: int = 0, failures: list[str] | None = None) -> gr.Blocks:
    return Page(studio, initial, failures or []).build()


"""`nat-gan prepare`: build LMDB datasets (ffhq, church, folder, digits) and check them.

Only argument parsing and printing live here; the work is :mod:`natgan.data`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from natgan.cli.console import console, emit_json, err_console
from natgan.cli.outputs import deprecated_alias, overwrite_option

prepare_app = typer.Typer(
    name="prepare",
    help="Build LMDB datasets in the official StyleSwin/StyleNAT layout (plus metadata) and verify them.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

SIZES_HELP = "Comma-separated square sizes stored in one LMDB, e.g. 256,1024 (default 256)."
FILTER_HELP = "Resize filter for shorter side -> size (then centre crop): lanczos | box | bicubic | bilinear."
ENCODING_HELP = "Record encoding: jpeg (quality 100, as the official files) or png (lossless)."


def _out_opt(default: Optional[str]) -> Any:
    return typer.Option(default, "--out", "-o", help="Output LMDB directory.", show_default=bool(default))


# Options shared by the ffhq / church / folder builders (one declaration, used as each parameter's default)
SIZES_OPT = typer.Option(None, "--sizes", help=SIZES_HELP)
ENCODING_OPT = typer.Option("jpeg", "--encoding", help=ENCODING_HELP)
FILTER_OPT = typer.Option("lanczos", "--filter", help=FILTER_HELP)
WORKERS_OPT = typer.Option(None, "--workers", "-j", help="Worker processes (default: all cores; 0 = none).")
MAX_IMAGES_OPT = typer.Option(None, "--max-images", help="Stop after N images (quick subsets).")
SKIP_BAD_OPT = typer.Option(False, "--skip-bad", help="Skip unreadable images (listed at the end and in the "
                                                      "metadata) instead of stopping.")
OVERWRITE_OPT = overwrite_option("an existing output LMDB (renamed aside until the new one is complete)")
FORCE_ALIAS = deprecated_alias("--force")
PROGRESS_OPT = typer.Option(True, "--progress/--no-progress", help="Show the progress bar (stderr).")
JSON_OPT = typer.Option(False, "--json", help="Print the result as JSON.")
LABELS_OPT = typer.Option(None, "--labels", help="Class labels: auto (a stylegan2-ada dataset.json at the root, "
                                                 "if any; the default), folders (one sub-folder per class), "
                                                 "FILE.json|FILE.csv (file name -> class), or none.")


def _run_prepare(dataset: str, src: Optional[str], out: str, sizes: Optional[str], encoding: str, filter: str,
                 workers: Optional[int], max_images: Optional[int], skip_bad: bool, force: bool, json_out: bool,
                 progress: bool, labels: Optional[str] = None) -> None:
    from natgan.data.catalog import GUIDES
    from natgan.data.prepare import prepare_dataset
    from natgan.data.sources import SourceError

    try:
        result = prepare_dataset(src, out, dataset=dataset, sizes=sizes, encoding=encoding, filter=filter,
                                 workers=workers, max_images=max_images, skip_bad=skip_bad, force=force,
                                 progress=progress and not json_out, labels=labels)
    except SourceError:
        guide = GUIDES.get(dataset)
        if guide is not None:
            err_console.print(guide.text(), markup=False, highlight=False)
        raise
    _report(result, json_out)


def _report(result: dict[str, Any], json_out: bool) -> None:
    if json_out:
        emit_json(result)
        return
    sizes = ",".join(map(str, result["sizes"]))
    enc = f"jpeg q{result['jpeg_quality']}" if result["encoding"] == "jpeg" else result["encoding"]
    if result["status"] == "up-to-date":
        console.print(f"up to date: {result['out']} already holds {result['count']:,} images at {sizes} "
                      f"from this source with these options (--overwrite rebuilds)", markup=False)
    else:
        speed = f", {result['images_per_s']:.1f} img/s" if result.get("images_per_s") else ""
        console.print(f"built {result['out']}: {result['count']:,} images at {sizes} ({enc}, "
                      f"{result['filter']} resize) in {result['seconds']:.1f}s{speed}", markup=False)
    console.print(f"content hash {result['content_hash']}", markup=False)
    if result.get("labels"):
        console.print(class_histogram_line(result["labels"]), markup=False)
    if result["ignored_files"]:
        console.print(f"ignored {result['ignored_files']:,} files without an image extension", markup=False)
    for warning in result.get("warnings", []):
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    for line in leftover_lines(result.get("leftovers", {})):
        err_console.print(line, markup=False, highlight=False)
    if result["skipped"]:
        err_console.print(f"[yellow]skipped {len(result['skipped'])} unreadable files:[/]", highlight=False)
        for item in result["skipped"]:
            err_console.print(f"  {item['path']}: {item['error']}", markup=False, highlight=False)


LEFTOVER_LINES = {
    "removed": "removed {n} partial build(s) of the same --out left by killed runs: {paths}",
    "in_progress": "warning: {n} build(s) of the same --out by running processes, left alone: {paths}",
    "moved_aside": "warning: {paths}: the dataset an interrupted --overwrite moved aside, kept for now (move it "
                   "elsewhere to keep it: the next prepare of this --out deletes it)",
    "not_ours": "warning: {paths}: named like a partial build of this --out but holds other files; left alone",
}


def leftover_lines(leftovers: dict[str, list[str]]) -> list[str]:
    """One line per kind of leftover :func:`natgan.data.writer.tidy_leftovers` found."""
    return [LEFTOVER_LINES[kind].format(n=len(paths), paths=", ".join(paths))
            for kind, paths in leftovers.items() if paths]


def class_histogram_line(labels: dict[str, Any]) -> str:
    """``10 classes from ...: 0 178, 1 182, ...`` (the images per class of a labelled dataset)."""
    pairs = ", ".join(f"{name} {n:,}" for name, n in zip(labels["classes"], labels["histogram"]))
    return f"{len(labels['classes'])} classes from {labels['origin']}: {pairs}"


def register(app: typer.Typer) -> None:
    app.add_typer(prepare_app, name="prepare")


@prepare_app.command("ffhq")
def ffhq(
    src: Optional[str] = typer.Argument(None, help="FFHQ images1024x1024 folder (nested) or a zip of it."),
    out: str = _out_opt("ffhq.lmdb"),
    sizes: Optional[str] = SIZES_OPT,
    encoding: str = ENCODING_OPT,
    filter: str = FILTER_OPT,
    workers: Optional[int] = WORKERS_OPT,
    max_images: Optional[int] = MAX_IMAGES_OPT,
    skip_bad: bool = SKIP_BAD_OPT,
    overwrite: bool = OVERWRITE_OPT,
    force: bool = FORCE_ALIAS,
    progress: bool = PROGRESS_OPT,
    json_out: bool = JSON_OPT,
    labels: Optional[str] = LABELS_OPT,
) -> None:
    """FFHQ (70,000 faces, 1024x1024 PNG) -> LMDB. Without SRC, explains where to get it."""
    _run_prepare("ffhq", src, out, sizes, encoding, filter, workers, max_images, skip_bad, overwrite or force,
                 json_out, progress, labels)


@prepare_app.command("church")
def church(
    src: Optional[str] = typer.Argument(None, help="LSUN church_outdoor_train_lmdb directory, or a folder / zip "
                                                   "of images."),
    out: str = _out_opt("church.lmdb"),
    sizes: Optional[str] = SIZES_OPT,
    encoding: str = ENCODING_OPT,
    filter: str = FILTER_OPT,
    workers: Optional[int] = WORKERS_OPT,
    max_images: Optional[int] = MAX_IMAGES_OPT,
    skip_bad: bool = SKIP_BAD_OPT,
    overwrite: bool = OVERWRITE_OPT,
    force: bool = FORCE_ALIAS,
    progress: bool = PROGRESS_OPT,
    json_out: bool = JSON_OPT,
    labels: Optional[str] = LABELS_OPT,
) -> None:
    """LSUN Church (LSUN's own LMDB export, or a folder / zip) -> LMDB. Without SRC, explains where to get it."""
    _run_prepare("church", src, out, sizes, encoding, filter, workers, max_images, skip_bad, overwrite or force,
                 json_out, progress, labels)


@prepare_app.command("folder")
def folder(
    src: str = typer.Argument(..., help="Image folder (nested), zip archive, or an LMDB of images."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Output LMDB directory (default: <SRC name>.lmdb "
                                                                 "in the current directory)."),
    sizes: Optional[str] = SIZES_OPT,
    encoding: str = ENCODING_OPT,
    filter: str = FILTER_OPT,
    workers: Optional[int] = WORKERS_OPT,
    max_images: Optional[int] = MAX_IMAGES_OPT,
    skip_bad: bool = SKIP_BAD_OPT,
    overwrite: bool = OVERWRITE_OPT,
    force: bool = FORCE_ALIAS,
    progress: bool = PROGRESS_OPT,
    json_out: bool = JSON_OPT,
    labels: Optional[str] = LABELS_OPT,
) -> None:
    """Any image collection (nested folders, zip) -> LMDB; class labels with --labels (or a dataset.json)."""
    if out is None:
        out = Path(src.rstrip("/\\")).stem + ".lmdb"
    _run_prepare("folder", src, out, sizes, encoding, filter, workers, max_images, skip_bad, overwrite or force,
                 json_out, progress, labels)


@prepare_app.command("digits")
def digits(
    out: str = _out_opt("digits.lmdb"),
    sizes: str = typer.Option("32", "--sizes", help="Comma-separated sizes (the 8x8 digits are upscaled)."),
    encoding: str = typer.Option("png", "--encoding", help=ENCODING_HELP),
    filter: str = typer.Option("bicubic", "--filter", help=FILTER_HELP),
    max_images: Optional[int] = typer.Option(None, "--max-images", help="Stop after N images."),
    overwrite: bool = OVERWRITE_OPT,
    force: bool = FORCE_ALIAS,
    progress: bool = PROGRESS_OPT,
    json_out: bool = JSON_OPT,
    labels: Optional[str] = typer.Option(None, "--labels", help="auto (the default: store the 10 digit labels) "
                                                                "or none."),
) -> None:
    """The built-in default dataset: scikit-learn's 1,797 handwritten digits, 32x32 RGB (no download), with
    their 10 class labels (digits 0-9)."""
    from natgan.data.digits import prepare_digits

    result = prepare_digits(out, sizes=sizes, encoding=encoding, filter=filter, force=overwrite or force,
                            max_images=max_images, progress=progress and not json_out, labels=labels)
    _report(result, json_out)


@prepare_app.command("check")
def check(
    path: str = typer.Argument(..., help="LMDB to verify (nat-gan or official layout)."),
    workers: Optional[int] = WORKERS_OPT,
    progress: bool = PROGRESS_OPT,
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Decode every record, count images per size, compare content hashes; exit 1 on any problem."""
    from natgan.data.check import check_dataset
    from natgan.errors import DataError

    report = check_dataset(path, workers=workers, progress=progress and not json_out)
    if json_out:
        emit_json(report)
    else:
        _print_check(report)
    if not report["ok"]:
        raise DataError(f"{report['path']}: {report['problem_count']} problem(s); first: {report['problems'][0]}")


def _print_check(report: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"{report['path']} ({report['format']})")
    for col in ("size", "records", "bad", "content hash"):
        table.add_column(col, justify="right" if col in ("size", "records", "bad") else "left")
    for size, row in report["sizes"].items():
        table.add_row(f"{size}x{size}", f"{row['records']:,}", str(row["bad"]), report["size_hashes"][size])
    console.print(table)
    meta = report["metadata"]
    if meta:
        console.print(f"dataset {meta['dataset']} from {meta['source']['path']} ({meta['source']['layout']}), "
                      f"{meta['encoding']}, {meta['resize']['filter']} resize, {len(meta['skipped'])} skipped "
                      f"at prepare time", markup=False)
        console.print(f"content hash {report['content_hash']} "
                      f"({'matches' if report['hash_ok'] else 'DIFFERS FROM'} the recorded one)", markup=False)
        if report.get("labels"):
            console.print(class_histogram_line(report["labels"]), markup=False)
    else:
        console.print(f"no nat-gan metadata (official layout); content hash {report['content_hash']}", markup=False)
    status = "[green]ok[/]" if report["ok"] else f"[red]{report['problem_count']} problem(s)[/]"
    console.print(f"{report['count']:,} images checked in {report['seconds']:.1f}s: {status}")
    for problem in report["problems"]:
        err_console.print(f"  {problem}", markup=False, highlight=False)

"""What the named datasets are, where researchers get them and which layout ``prepare`` expects.

Nothing here downloads: FFHQ and LSUN are large, licensed and hosted by their authors, so ``prepare``
only explains how to fetch them and then validates what it is given.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetGuide:
    name: str
    title: str
    expected_count: int | None
    default_sizes: tuple[int, ...]
    obtain: str          # where the data comes from (one paragraph)
    layout: str          # what SRC must look like (one paragraph)

    def text(self) -> str:
        """The multi-line explanation printed when SRC is missing or wrong."""
        return f"{self.title}\n  where: {self.obtain}\n  SRC:   {self.layout}"


FFHQ = DatasetGuide(
    name="ffhq",
    title="FFHQ (Flickr-Faces-HQ, NVIDIA; CC BY-NC-SA 4.0): 70,000 aligned faces, 1024x1024 PNG, ~89 GB.",
    expected_count=70_000,
    default_sizes=(256,),
    obtain="https://github.com/NVlabs/ffhq-dataset  (`python download_ffhq.py --images` fetches images1024x1024/; "
           "mirrors on Kaggle / Hugging Face ship the same files as a zip).",
    layout="the images1024x1024 folder (00000/00000.png ... 69000/69999.png; nested folders are fine) or a zip of "
           "it. The official StyleSwin/StyleNAT FFHQ-256 is a Lanczos downscale of these (the default --filter).",
)

CHURCH = DatasetGuide(
    name="church",
    title="LSUN Church (church_outdoor train, Yu et al.): 126,227 photos, webp, shorter side 256.",
    expected_count=126_227,
    default_sizes=(256,),
    obtain="https://github.com/fyu/lsun  (`python download.py -c church_outdoor` gives "
           "church_outdoor_train_lmdb.zip, 2.3 GB; unzip it).",
    layout="the unzipped church_outdoor_train_lmdb directory (LSUN's LMDB: hash keys -> webp bytes, data.mdb "
           "inside), or a folder / zip of exported images.",
)

GUIDES = {g.name: g for g in (FFHQ, CHURCH)}

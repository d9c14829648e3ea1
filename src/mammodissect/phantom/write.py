"""Write phantoms as a probe set (16-bit PNG + masks + manifest) and draw contact sheets."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from mammodissect.errors import MammodissectError
from mammodissect.phantom.generate import Phantom
from mammodissect.phantom.vocabulary import FAMILIES

__all__ = ["MANIFEST_COLUMNS", "contact_sheet", "read_masks", "write_phantoms"]

#: Manifest columns, in order (the family columns follow ``findings``).
MANIFEST_COLUMNS: tuple[str, ...] = (
    "path",
    "image_id",
    "view",
    "laterality",
    "density",
    "birads",
    "findings",
    *FAMILIES,
    "mask_path",
    "report",
)


def write_phantoms(folder: str | os.PathLike[str], phantoms: Sequence[Phantom]) -> Path:
    """Write phantoms as a probe set any model can be run on.

    Writes ``images/NAME.png`` (16-bit grayscale, the image quantised to 0..65535),
    ``masks/NAME.npz`` (compressed, one bool array per concept, keyed by the concept string)
    and ``manifest.csv`` with :data:`MANIFEST_COLUMNS`, one row per phantom in order. Loading
    the manifest with :func:`mammodissect.probe.load_probe` gives the images in that order and
    the other columns as labels; ``mammodissect run --probe FOLDER/manifest.csv`` probes them.

    Parameters
    ----------
    folder : str or os.PathLike
        Output folder (created if needed; files of the same names are replaced).
    phantoms : sequence of Phantom
        What to write; names must be unique.

    Returns
    -------
    pathlib.Path
        The manifest's path.

    Raises
    ------
    MammodissectError
        If there are no phantoms, two share a name, or the folder cannot be written.
    """
    phantoms = list(phantoms)
    if not phantoms:
        raise MammodissectError("no phantoms to write")
    names = [p.name for p in phantoms]
    if len(set(names)) != len(names):
        raise MammodissectError("phantom names repeat; generate one set per seed and index")
    root = Path(folder)
    try:
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        rows = []
        for phantom in phantoms:
            image_rel = f"images/{phantom.name}.png"
            mask_rel = f"masks/{phantom.name}.npz"
            Image.fromarray(phantom.pixels).save(root / image_rel)
            np.savez_compressed(root / mask_rel, **dict[str, Any](phantom.masks))
            row = {"path": image_rel, "image_id": phantom.name}
            row.update(
                {key: phantom.labels[key] for key in MANIFEST_COLUMNS if key in phantom.labels}
            )
            row["mask_path"] = mask_rel
            row["report"] = phantom.report
            rows.append(row)
        manifest = root / "manifest.csv"
        pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).to_csv(manifest, index=False)
    except OSError as exc:
        raise MammodissectError(
            f"cannot write phantoms to '{os.fspath(folder)}' ({exc.strerror or exc})"
        ) from None
    return manifest


def read_masks(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a ``masks/NAME.npz`` file back as concept -> bool mask."""
    with np.load(path) as data:
        return {concept: data[concept].astype(bool) for concept in data.files}


def contact_sheet(
    phantoms: Sequence[Phantom], columns: int = 8, *, outline: str | None = None
) -> np.ndarray:
    """Tile phantom images into one uint8 RGB array (3-pixel gaps).

    ``outline`` names a concept whose mask edge is drawn in red where present (for checking
    masks by eye).
    """
    phantoms = list(phantoms)
    if not phantoms:
        raise MammodissectError("no phantoms for a contact sheet")
    height, width = phantoms[0].shape
    rows = -(-len(phantoms) // columns)
    gap = 3
    sheet = np.full(
        (rows * (height + gap) + gap, columns * (width + gap) + gap, 3), 40, dtype=np.uint8
    )
    for i, phantom in enumerate(phantoms):
        gray = np.rint(phantom.image * 255).astype(np.uint8)
        tile = np.repeat(gray[:, :, None], 3, axis=2)
        if outline is not None and outline in phantom.masks:
            mask = phantom.masks[outline]
            edge = mask & ~(
                np.roll(mask, 1, 0)
                & np.roll(mask, -1, 0)
                & np.roll(mask, 1, 1)
                & np.roll(mask, -1, 1)
            )
            tile[edge] = (255, 40, 40)
        r, c = divmod(i, columns)
        y, x = gap + r * (height + gap), gap + c * (width + gap)
        sheet[y : y + height, x : x + width] = tile
    return sheet

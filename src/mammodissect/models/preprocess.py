"""Image preprocessing recipes: a decoded 2-D image in, a model's input tensor out.

Each recipe works in two stages so the expensive part can be cached on disk:

* ``prepare(image) -> (array, Geometry)``: the geometric and intensity steps
  (breast crop, resize, optional flip) giving a compact (H, W) array at the
  model's input size, and where each output pixel came from;
* ``finish(array) -> tensor``: per-image scaling, normalisation, channels.

Calling a recipe does both. Recipes are frozen dataclasses: equal fields, equal
recipe, so a run that feeds one recipe to target and dissector preprocesses each
image once. Named recipes: ``imagenet`` (:class:`ImagePreprocess`: min-max,
resize or aspect-preserving pad, model normalisation) and ``mammoclip``
(:class:`MammoClipPreprocess`, Mammo-CLIP's own pipeline); a user's own
transform plugs in through :class:`TransformPreprocess`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from mammodissect.errors import MammodissectError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MAMMOCLIP_MEAN",
    "MAMMOCLIP_SIZE",
    "MAMMOCLIP_STD",
    "Geometry",
    "ImagePreprocess",
    "MammoClipPreprocess",
    "TransformPreprocess",
    "area_resize",
    "breast_crop",
    "parse_image_size",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAMMOCLIP_MEAN = (0.3089279,)
MAMMOCLIP_STD = (0.25053555408335154,)
MAMMOCLIP_SIZE = (1520, 912)  # height x width
_FLIPS = (None, "left", "right")
_FITS = ("stretch", "pad")


@dataclass(frozen=True)
class Geometry:
    """Where a prepared image came from: decoded size, kept region, output placement, flip.

    ``crop`` is (y0, x0, y1, x1) in decoded pixels; that region was resized to
    ``content`` (height, width) and placed at ``pad`` (top, left) in an output of
    ``size`` (height, width), then mirrored left-right when ``flipped``.
    """

    height: int
    width: int
    crop: tuple[int, int, int, int]
    content: tuple[int, int]
    size: tuple[int, int]
    pad: tuple[int, int] = (0, 0)
    flipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Flat columns for the per-image table."""
        y0, x0, y1, x1 = self.crop
        return {
            "orig_height": self.height, "orig_width": self.width,
            "crop_y0": y0, "crop_x0": x0, "crop_y1": y1, "crop_x1": x1,
            "scale_y": self.content[0] / max(y1 - y0, 1),
            "scale_x": self.content[1] / max(x1 - x0, 1),
            "content_height": self.content[0], "content_width": self.content[1],
            "pad_top": self.pad[0], "pad_left": self.pad[1],
            "out_height": self.size[0], "out_width": self.size[1], "flipped": self.flipped,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, columns: dict[str, Any]) -> Geometry:
        """Rebuild from :meth:`to_dict`'s columns."""
        c = columns
        crop = (c["crop_y0"], c["crop_x0"], c["crop_y1"], c["crop_x1"])
        content = (c["content_height"], c["content_width"])
        return cls(c["orig_height"], c["orig_width"], crop, content,
                   (c["out_height"], c["out_width"]), (c["pad_top"], c["pad_left"]),
                   bool(c["flipped"]))  # fmt: skip

    def map_boxes(self, boxes: pd.DataFrame) -> pd.DataFrame:
        """Boxes (``xmin, ymin, xmax, ymax`` in decoded pixels) in output pixels, clipped."""
        y0, x0, y1, x1 = self.crop
        sy, sx = self.content[0] / max(y1 - y0, 1), self.content[1] / max(x1 - x0, 1)
        out = boxes.copy()
        xs = [(boxes[c] - x0) * sx + self.pad[1] for c in ("xmin", "xmax")]
        ys = [(boxes[c] - y0) * sy + self.pad[0] for c in ("ymin", "ymax")]
        if self.flipped:
            xs = [self.size[1] - xs[1], self.size[1] - xs[0]]
        out["xmin"], out["xmax"] = (x.clip(0, self.size[1]) for x in xs)
        out["ymin"], out["ymax"] = (y.clip(0, self.size[0]) for y in ys)
        return out


def _minmax(image: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] by the image's own minimum and maximum (all zeros when constant)."""
    image = np.asarray(image, dtype=np.float32)
    lo, hi = float(image.min()), float(image.max())
    return (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)


def _resize_linear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)[
        0, 0
    ].numpy()


def _area_axis(a: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    """Exact area averaging along one axis (fractional pixel overlaps), for shrinking."""
    a = np.moveaxis(np.asarray(a, dtype=np.float64), axis, 0)
    n_in = a.shape[0]
    total = np.concatenate([np.zeros((1, *a.shape[1:])), np.cumsum(a, axis=0)])
    edges = np.arange(n_out + 1) * (n_in / n_out)
    base = np.minimum(np.floor(edges).astype(np.int64), n_in - 1)
    frac = (edges - base)[(...,) + (None,) * (a.ndim - 1)]
    integral = total[base] + frac * a[base]  # the running sum, exact for a step function
    out = (integral[1:] - integral[:-1]) / (n_in / n_out)
    return np.moveaxis(out, 0, axis)


def area_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to (height, width): exact area averaging along an axis that shrinks, linear
    interpolation along one that grows (as OpenCV's INTER_AREA does)."""
    out = np.asarray(image, dtype=np.float64)
    for axis, n_out in enumerate(size):
        if n_out < out.shape[axis]:
            out = _area_axis(out, n_out, axis)
    if out.shape != tuple(size):
        out = _resize_linear(out, size)
    return out.astype(np.float32)


def _longest_run(mask: np.ndarray) -> tuple[int, int]:
    """Start and end (exclusive) of the longest run of True; the whole range if none."""
    best, start, best_span = (0, len(mask)), None, 0
    for i, value in enumerate([*mask.tolist(), False]):
        if value and start is None:
            start = i
        elif not value and start is not None:
            if i - start > best_span:
                best, best_span = (start, i), i - start
            start = None
    return best


def breast_crop(image8: np.ndarray, background: int = 40) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1) of the breast in an 8-bit image: the longest run of columns holding
    any pixel above ``background``, then, within them, the longest such run of rows."""
    x0, x1 = _longest_run(np.asarray((image8 > background).any(axis=0)))
    y0, y1 = _longest_run(np.asarray((image8[:, x0:x1] > background).any(axis=1)))
    return y0, x0, y1, x1


def _should_flip(prepared: np.ndarray, flip: str | None) -> bool:
    """Whether mirroring puts the breast (the brighter half) on the ``flip`` side."""
    if flip is None:
        return False
    half = prepared.shape[1] // 2
    on_left = float(prepared[:, :half].sum()) >= float(
        prepared[:, prepared.shape[1] - half :].sum()
    )
    return on_left != (flip == "left")


def _normalise(x: np.ndarray, channels: int, mean: tuple, std: tuple) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).expand(channels, -1, -1)
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return ((t - m) / s).contiguous()


@dataclass(frozen=True)
class _Recipe:
    """What every built-in recipe has: output size, normalisation, channels, flip."""

    size: tuple[int, int]
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    channels: int = 3
    flip: str | None = None

    def __post_init__(self) -> None:
        if len(self.size) != 2 or min(self.size) < 1:
            raise MammodissectError(f"image size {self.size!r} must be (height, width) > 0")
        object.__setattr__(self, "size", (self.size[0], self.size[1]))  # a list becomes a pair
        for label, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, self.channels):
                raise MammodissectError(
                    f"preprocessing {label} {values!r} needs 1 or {self.channels} values"
                )
        if min(self.std) <= 0:
            raise MammodissectError(f"preprocessing std {self.std!r} must be positive")
        if self.flip not in _FLIPS:
            raise MammodissectError(f"flip {self.flip!r} must be left, right or empty")

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, Geometry]:
        """The cacheable stage; see the module documentation."""
        raise NotImplementedError

    def finish(self, prepared: np.ndarray) -> torch.Tensor:
        """Per-image min-max to [0, 1], normalisation, ``channels`` copies."""
        return _normalise(_minmax(prepared), self.channels, self.mean, self.std)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """Turn an (H, W) float array into a (channels, height, width) float32 tensor."""
        if np.ndim(image) != 2:
            raise MammodissectError(f"expected a 2-D image, got shape {np.shape(image)}")
        return self.finish(self.prepare(image)[0])

    def with_size(self, size: tuple[int, int]) -> _Recipe:
        """The same recipe at another input size."""
        return dataclasses.replace(self, size=(size[0], size[1]))

    def describe(self) -> dict[str, Any]:
        """What the recipe does, for run.json and cache fingerprints."""
        fields = dataclasses.asdict(self)
        return {"name": fields.pop("name"), **{k: _jsonable(v) for k, v in fields.items()}}

    def prepare_key(self) -> dict[str, Any]:
        """What ``prepare`` depends on (not the normalisation): the prepared-image cache key."""
        key = self.describe()
        for field in ("mean", "std", "channels"):
            key.pop(field)
        return key


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class ImagePreprocess(_Recipe):
    """The ``imagenet`` recipe: min-max scale, fit to ``size``, normalise.

    ``fit="stretch"`` resizes to (height, width) (antialiased bilinear);
    ``fit="pad"`` keeps the aspect ratio and pads with zeros (black) to the size.
    """

    fit: str = "stretch"
    name: str = "imagenet"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.fit not in _FITS:
            raise MammodissectError(f"fit {self.fit!r} must be one of {', '.join(_FITS)}")

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, Geometry]:
        """Min-max to [0, 1], resize or pad to ``size``, flip if asked: float32 (H, W)."""
        scaled = _minmax(image)
        h, w = scaled.shape
        content, pad = self.size, (0, 0)
        if self.fit == "pad":
            scale = min(self.size[0] / h, self.size[1] / w)
            content = (max(1, round(h * scale)), max(1, round(w * scale)))
            pad = ((self.size[0] - content[0]) // 2, (self.size[1] - content[1]) // 2)
        out = scaled if (h, w) == content else _resize_linear(scaled, content)
        if self.fit == "pad":
            canvas = np.zeros(self.size, dtype=np.float32)
            canvas[pad[0] : pad[0] + content[0], pad[1] : pad[1] + content[1]] = out
            out = canvas
        flipped = _should_flip(out, self.flip)
        out = out[:, ::-1].copy() if flipped else out
        return out, Geometry(h, w, (0, 0, h, w), content, self.size, pad, flipped)


@dataclass(frozen=True)
class MammoClipPreprocess(_Recipe):
    """The ``mammoclip`` recipe, Mammo-CLIP's pipeline step by step.

    Offline part (``prepare``, cached): crop ``border`` pixels from every edge;
    min-max to 8 bit; crop to the breast (:func:`breast_crop` with ``background``);
    area-resize to ``size`` (1520 high x 912 wide); round to 8 bit; optionally
    mirror so every breast faces the same side. Online part (``finish``): per-image
    min-max to [0, 1], then ``(x - mean) / std`` (the checkpoint's values) on three
    identical channels. No CLAHE. MONOCHROME1 inversion happens when reading.
    """

    size: tuple[int, int] = MAMMOCLIP_SIZE
    mean: tuple[float, ...] = MAMMOCLIP_MEAN
    std: tuple[float, ...] = MAMMOCLIP_STD
    border: int = 5
    background: int = 40
    name: str = "mammoclip"

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, Geometry]:
        """The offline steps: an 8-bit (H, W) array at ``size`` and its geometry."""
        h, w = np.shape(image)
        b = self.border if min(h, w) > 2 * self.border + 1 else 0
        inner = np.asarray(image)[b : h - b, b : w - b]
        image8 = (_minmax(inner) * 255).astype(np.uint8)
        y0, x0, y1, x1 = breast_crop(image8, self.background)
        resized = area_resize(image8[y0:y1, x0:x1], self.size)
        out = np.clip(np.rint(resized), 0, 255).astype(np.uint8)
        flipped = _should_flip(out, self.flip)
        out = out[:, ::-1].copy() if flipped else out
        crop = (y0 + b, x0 + b, y1 + b, x1 + b)
        return out, Geometry(h, w, crop, self.size, self.size, (0, 0), flipped)


@dataclass(frozen=True)
class TransformPreprocess:
    """A user's own transform (torchvision or MONAI style) as a recipe.

    The decoded image is min-max scaled to [0, 1] and given to ``transform`` as a
    (1, H, W) float tensor; a one-channel result is repeated to ``channels``.
    Its geometry is unknown, so boxes cannot be mapped through it.
    """

    transform: Callable[[torch.Tensor], Any]
    name: str = "custom"
    channels: int = 3

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, None]:
        """Min-max scaling only (the transform decides the rest)."""
        return _minmax(image), None

    def finish(self, prepared: np.ndarray) -> torch.Tensor:
        """Apply the transform; repeat a single channel."""
        out = self.transform(torch.from_numpy(np.ascontiguousarray(prepared))[None])
        out = torch.as_tensor(np.asarray(out) if not isinstance(out, torch.Tensor) else out)
        if out.ndim != 3:
            raise MammodissectError(
                f"preprocess transform {self.name!r} returned shape {tuple(out.shape)}; "
                "it must return (channels, height, width)"
            )
        if out.shape[0] == 1 and self.channels != 1:
            out = out.expand(self.channels, -1, -1)
        return out.float().contiguous()

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """Turn an (H, W) float array into a (channels, height, width) tensor."""
        return self.finish(self.prepare(image)[0])

    def describe(self) -> dict[str, Any]:
        """The transform's name and repr."""
        return {"name": self.name, "transform": repr(self.transform)[:500]}


def parse_image_size(value: Any) -> tuple[int, int] | None:
    """Read an image size: ``None``, ``224``, ``"1520x912"`` (height x width) or a pair."""
    if value is None or value == "":
        return None
    size: tuple[int, ...]
    try:
        if isinstance(value, int):
            size = (value, value)
        elif isinstance(value, str):
            parts = value.lower().replace(",", "x").split("x")
            size = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else ()
        else:
            size = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        size = ()
    if len(size) != 2 or min(size) < 1:
        raise MammodissectError(
            f"image size {value!r} is not valid; give HEIGHTxWIDTH (e.g. 1520x912) or one number"
        )
    return (size[0], size[1])

"""Deterministic generator of a small, hard, synthetic COCO-format detection set.

The data set is meant for unit tests and for CPU training demos of knowledge
distillation: it is small and quick to build, yet hard enough that detector
capacity matters.

Scene model
-----------
Every image is built in floating point (``float64``, shape ``(H, W, 3)``,
values nominally in ``[0, 255]``) and then quantised to ``uint8``:

1. **Background.** A random base colour plus a linear colour gradient in a
   random direction, two octaves of smooth value noise (a coarse and a finer
   grid, bilinearly upsampled) and, in some images, a faint stripe or checker
   texture.
2. **Clutter under the objects.** Thin random line segments and semi-opaque,
   soft-edged irregular blobs.
3. **Objects and distractors, in random order.** Each object belongs to one of
   :data:`SYNTHETIC_CLASSES`; the class is defined by *shape only*. Colour,
   contrast to the local background, fill (solid, gradient, noise texture or
   stripes) and an optional border are random per instance. Shapes are randomly
   rotated and slightly stretched; their size (diameter of the enclosing circle)
   is log-uniform between 8 px and 60 % of the shorter image side. Interleaved
   with the objects are *distractors* - shapes that belong to no class
   (irregular polygons, L/T shapes, arrows, pie slices / semicircles and open
   arcs) - drawn with the same size and colour statistics. Objects are drawn in
   sequence, so later objects and distractors occlude earlier ones; about a
   third of the objects are placed next to an earlier one to make occlusion
   common.
4. **Clutter over the objects.** A few more line segments.
5. **Sensor effects.** An optional ``[1, 2, 1]`` blur and Gaussian pixel noise.

Every drawn primitive is described by a signed distance function (SDF, in
pixels; negative inside), which gives anti-aliased edges and an exact
``sdf <= 0`` pixel mask. An ``owner`` map records, for every pixel, which
primitive covered it last; after drawing, an object's *visible* mask is the set
of pixels it still owns. Annotations use that visible mask: the box is its
tight box (COCO ``[x, y, w, h]`` with the pixel-box convention of
``pycocotools.mask.toBbox``), the area is its pixel count and the segmentation
is its RLE. An object is drawn but not annotated if less than 30 % of its full
area (including any part outside the image) is visible, or if its visible box
is narrower than 2 px in either direction. About 5 % of the images of each split
contain no objects at all (clutter and distractors only); they are kept in the
json with no annotations.

Determinism
-----------
Each image uses its own ``numpy.random.Generator`` seeded from
``(seed, split, index)`` through :class:`numpy.random.SeedSequence`; no global
random state is touched. Pixels are computed with float64 element-wise
arithmetic only (no library blurs, resizes or rasterisers, whose results may
vary between OpenCV versions or CPUs), and the few scalars derived from
transcendental functions are rounded before use, so the same parameters give
the same pixel arrays and byte-identical json everywhere. PNG files are written
with :func:`cv2.imwrite`; the bytes of the PNG stream may depend on the zlib
version, but the decoded pixels do not.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from ..utils.atomic import atomic_write

__all__ = ["SYNTHETIC_CLASSES", "GENERATOR_VERSION", "generate_synthetic_coco"]

#: Version of the scene model; bump whenever the generated data would change.
GENERATOR_VERSION = "1.0.0"

#: Class names, one per shape family. Category ids are ``index + 1``.
SYNTHETIC_CLASSES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "cross",
    "ring",
    "star",
    "hexagon",
    "capsule",
)

_SPLIT_CODES = {"train": 0, "val": 1}
_EMPTY_FRACTION = 0.05
_MIN_VISIBLE_FRACTION = 0.3
_MIN_BOX_SIDE = 2
_MIN_OBJECT_SIZE = 8.0
_MAX_OBJECT_FRACTION = 0.6
_NEAR_PLACEMENT_PROB = 0.35
_OWNER_BACKGROUND = -1
_OWNER_CLUTTER = -2
_FILE_RE = re.compile(r"^\d{6}\.png$")

# An SDF maps pixel-centre coordinates px (1, w) and py (h, 1), float64, to a
# signed distance in pixels of shape (h, w), float64 (negative inside).
SdfFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


# --------------------------------------------------------------------------- #
# Small numeric helpers
# --------------------------------------------------------------------------- #
def _q(x: float) -> float:
    """Round a scalar coming from a transcendental function to 1e-9.

    ``math.cos``/``math.exp`` may differ by one ulp between C libraries;
    rounding removes that difference (except in astronomically rare ties).
    """
    return round(float(x), 9)


def _cos_sin(angle: float) -> tuple[float, float]:
    """Return ``(cos(angle), sin(angle))`` rounded with :func:`_q`."""
    return _q(math.cos(angle)), _q(math.sin(angle))


def _unit_vector(rng: np.random.Generator, dim: int) -> np.ndarray:
    """Random direction, float64 array of shape ``(dim,)`` with unit norm."""
    v = rng.standard_normal(dim)
    n = math.sqrt(sum(float(t) * float(t) for t in v))  # fixed-order sum, no BLAS
    if n < 1e-12:
        v = np.zeros(dim)
        v[0] = 1.0
        return v
    return v / n


def _upsample_bilinear(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinearly upsample a low-resolution grid with element-wise arithmetic.

    Args:
        grid: float64 array of shape ``(gh, gw, c)``.
        h: output height.
        w: output width.

    Returns:
        float64 array of shape ``(h, w, c)``.
    """
    gh, gw = grid.shape[:2]

    def axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        pos = np.clip(pos, 0.0, n_in - 1.0)
        i0 = np.floor(pos).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, pos - i0

    y0, y1, fy = axis(h, gh)
    x0, x1, fx = axis(w, gw)
    fx = fx[None, :, None]
    fy = fy[:, None, None]
    top = grid[y0][:, x0] * (1.0 - fx) + grid[y0][:, x1] * fx
    bottom = grid[y1][:, x0] * (1.0 - fx) + grid[y1][:, x1] * fx
    return top * (1.0 - fy) + bottom * fy


def _triangle_wave(v: np.ndarray) -> np.ndarray:
    """Periodic triangle wave with period 1 and range ``[0, 1]`` (same shape as ``v``)."""
    return np.abs(2.0 * (v - np.floor(v)) - 1.0)


# --------------------------------------------------------------------------- #
# Signed distance functions (pixel units)
# --------------------------------------------------------------------------- #
def _sdf_circle(cx: float, cy: float, r: float) -> SdfFn:
    def fn(px: np.ndarray, py: np.ndarray) -> np.ndarray:
        dx = px - cx
        dy = py - cy
        return np.sqrt(dx * dx + dy * dy) - r

    return fn


def _sdf_ring(cx: float, cy: float, r_out: float, r_in: float) -> SdfFn:
    mid = 0.5 * (r_out + r_in)
    half = 0.5 * (r_out - r_in)

    def fn(px: np.ndarray, py: np.ndarray) -> np.ndarray:
        dx = px - cx
        dy = py - cy
        return np.abs(np.sqrt(dx * dx + dy * dy) - mid) - half

    return fn


def _sdf_capsule(ax: float, ay: float, bx: float, by: float, r: float) -> SdfFn:
    ex, ey = bx - ax, by - ay
    ee = ex * ex + ey * ey

    def fn(px: np.ndarray, py: np.ndarray) -> np.ndarray:
        wx = px - ax
        wy = py - ay
        if ee > 0.0:
            t = np.clip((wx * ex + wy * ey) / ee, 0.0, 1.0)
        else:
            t = np.zeros(np.broadcast_shapes(wx.shape, wy.shape))
        dx = wx - ex * t
        dy = wy - ey * t
        return np.sqrt(dx * dx + dy * dy) - r

    return fn


def _sdf_polygon(verts: np.ndarray) -> SdfFn:
    """SDF of a simple (possibly non-convex) polygon given as ``(n, 2)`` float64 vertices."""
    pts = [(float(x), float(y)) for x, y in verts]

    def fn(px: np.ndarray, py: np.ndarray) -> np.ndarray:
        shape = np.broadcast_shapes(px.shape, py.shape)
        d2 = np.full(shape, np.inf)
        inside = np.zeros(shape, dtype=bool)
        n = len(pts)
        for i in range(n):
            ax, ay = pts[i]
            bx, by = pts[(i + 1) % n]
            ex, ey = bx - ax, by - ay
            wx = px - ax
            wy = py - ay
            ee = ex * ex + ey * ey
            if ee > 0.0:
                t = np.clip((wx * ex + wy * ey) / ee, 0.0, 1.0)
                dx = wx - ex * t
                dy = wy - ey * t
            else:
                dx = np.broadcast_to(wx, shape)
                dy = np.broadcast_to(wy, shape)
            d2 = np.minimum(d2, dx * dx + dy * dy)
            if ey != 0.0:
                crosses = (py < ay) != (py < by)
                x_int = ax + (py - ay) * (ex / ey)
                inside ^= crosses & (px < x_int)
        d = np.sqrt(d2)
        return np.where(inside, -d, d)

    return fn


def _to_local(px: np.ndarray, py: np.ndarray, cx: float, cy: float, c: float, s: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """Rotate pixel coordinates into a frame centred at ``(cx, cy)`` (rotation by -angle)."""
    dx = px - cx
    dy = py - cy
    return c * dx + s * dy, c * dy - s * dx


def _sdf_pie(cx: float, cy: float, r: float, half_aperture: float, angle: float) -> SdfFn:
    """Circular sector of radius ``r`` opening ``2 * half_aperture`` radians around its axis."""
    c, s = _cos_sin(angle)
    sa, ca = _cos_sin(half_aperture)[::-1]

    def fn(px: np.ndarray, py: np.ndarray) -> np.ndarray:
        lx, ly = _to_local(px, py, cx, cy, c, s)
        lx = np.abs(lx)
        length = np.sqrt(lx * lx + ly * ly) - r
        proj = np.clip(lx * sa + ly * ca, 0.0, r)
        mx = lx - sa * proj
        my = ly - ca * proj
        m = np.sqrt(mx * mx + my * my)
        return np.maximum(length, m * np.sign(ca * lx - sa * ly))

    return fn


def _sdf_arc(cx: float, cy: float, r: float, thickness: float, half_aperture: float,
             angle: float) -> SdfFn:
    """Open arc (thick circle segment) of centre-line radius ``r``."""
    c, s = _cos_sin(angle)
    sa, ca = _cos_sin(half_aperture)[::-1]
    half = 0.5 * thickness

    def fn(px: np.ndarray, py: np.ndarray) -> np.ndarray:
        lx, ly = _to_local(px, py, cx, cy, c, s)
        lx = np.abs(lx)
        ex = lx - sa * r
        ey = ly - ca * r
        d_end = np.sqrt(ex * ex + ey * ey)
        d_arc = np.abs(np.sqrt(lx * lx + ly * ly) - r)
        return np.where(ca * lx > sa * ly, d_end, d_arc) - half

    return fn


@dataclass(frozen=True)
class _Primitive:
    """A drawable shape: its SDF and a float bounding box ``(x0, y0, x1, y1)`` in pixels."""

    sdf: SdfFn
    extent: tuple[float, float, float, float]


def _place_polygon(unit: Sequence[tuple[float, float]], cx: float, cy: float, r: float,
                   angle: float, sx: float = 1.0, sy: float = 1.0) -> _Primitive:
    """Scale (``r * sx``, ``r * sy``), rotate by ``angle`` and translate unit-frame vertices."""
    c, s = _cos_sin(angle)
    verts = np.array(
        [(cx + c * (u * r * sx) - s * (v * r * sy), cy + s * (u * r * sx) + c * (v * r * sy))
         for u, v in unit],
        dtype=np.float64,
    )
    ext = (float(verts[:, 0].min()), float(verts[:, 1].min()), float(verts[:, 0].max()),
           float(verts[:, 1].max()))
    return _Primitive(_sdf_polygon(verts), ext)


def _regular_polygon(n: int, phase: float = 0.0) -> list[tuple[float, float]]:
    return [_cos_sin(phase + 2.0 * math.pi * k / n) for k in range(n)]


def _radial_polygon(angles: Sequence[float], radii: Sequence[float]) -> list[tuple[float, float]]:
    out = []
    for a, rad in zip(angles, radii):
        c, s = _cos_sin(a)
        out.append((c * rad, s * rad))
    return out


def _aspect(rng: np.random.Generator, lo: float, hi: float) -> tuple[float, float]:
    """Anisotropic stretch ``(sx, sy)`` with ``sx / sy`` in ``[lo, hi]`` and ``sx * sy ~ 1``."""
    a = float(rng.uniform(lo, hi))
    sx = math.sqrt(a)
    return sx, 1.0 / sx


def _make_object(cls_name: str, rng: np.random.Generator, cx: float, cy: float,
                 size: float) -> _Primitive:
    """Build the primitive of a class instance whose enclosing diameter is about ``size`` px."""
    r = 0.5 * size
    angle = float(rng.uniform(0.0, 2.0 * math.pi))
    if cls_name == "circle":
        return _Primitive(_sdf_circle(cx, cy, r), (cx - r, cy - r, cx + r, cy + r))
    if cls_name == "ring":
        r_in = r * float(rng.uniform(0.45, 0.7))
        return _Primitive(_sdf_ring(cx, cy, r, r_in), (cx - r, cy - r, cx + r, cy + r))
    if cls_name == "capsule":
        ratio = float(rng.uniform(1.8, 3.2))  # length / width
        rad = r / ratio
        half_len = r - rad
        c, s = _cos_sin(angle)
        ax, ay, bx, by = cx - c * half_len, cy - s * half_len, cx + c * half_len, cy + s * half_len
        ext = (min(ax, bx) - rad, min(ay, by) - rad, max(ax, bx) + rad, max(ay, by) + rad)
        return _Primitive(_sdf_capsule(ax, ay, bx, by, rad), ext)
    if cls_name == "square":
        h = 1.0 / math.sqrt(2.0)
        sx, sy = _aspect(rng, 0.85, 1.15)
        return _place_polygon([(-h, -h), (h, -h), (h, h), (-h, h)], cx, cy, r, angle, sx, sy)
    if cls_name == "triangle":
        angles = [math.pi / 2 + 2.0 * math.pi * k / 3 + float(rng.uniform(-0.17, 0.17))
                  for k in range(3)]
        radii = [float(rng.uniform(0.85, 1.0)) for _ in range(3)]
        return _place_polygon(_radial_polygon(angles, radii), cx, cy, r, angle)
    if cls_name == "hexagon":
        sx, sy = _aspect(rng, 0.85, 1.15)
        return _place_polygon(_regular_polygon(6), cx, cy, r, angle, sx, sy)
    if cls_name == "star":
        inner = float(rng.uniform(0.38, 0.55))
        angles = [math.pi * k / 5 for k in range(10)]
        radii = [1.0 if k % 2 == 0 else inner for k in range(10)]
        return _place_polygon(_radial_polygon(angles, radii), cx, cy, r, angle)
    if cls_name == "cross":
        w = float(rng.uniform(0.22, 0.36))
        a = 1.0 / math.sqrt(1.0 + w * w)  # arm tips lie on the unit circle
        w *= a
        unit = [(w, a), (w, w), (a, w), (a, -w), (w, -w), (w, -a),
                (-w, -a), (-w, -w), (-a, -w), (-a, w), (-w, w), (-w, a)]
        sx, sy = _aspect(rng, 0.9, 1.1)
        return _place_polygon(unit, cx, cy, r, angle, sx, sy)
    raise ValueError(f"unknown class {cls_name!r}")


_DISTRACTOR_KINDS = ("polygon", "l_shape", "t_shape", "arrow", "pie", "arc")


def _make_distractor(rng: np.random.Generator, cx: float, cy: float, size: float) -> _Primitive:
    """Build a shape that belongs to no class in :data:`SYNTHETIC_CLASSES`."""
    r = 0.5 * size
    angle = float(rng.uniform(0.0, 2.0 * math.pi))
    kind = _DISTRACTOR_KINDS[int(rng.integers(len(_DISTRACTOR_KINDS)))]
    box = (cx - r, cy - r, cx + r, cy + r)
    if kind == "polygon":
        # Lumpy irregular polygon: vertex radii follow low harmonics (2nd/3rd), so
        # the outline is neither regular (hexagon) nor spiky (star).
        n = int(rng.integers(7, 11))
        angles, radii = [], []
        a2, a3 = float(rng.uniform(0.15, 0.35)), float(rng.uniform(0.1, 0.3))
        p2, p3 = float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0, 2 * math.pi))
        for k in range(n):
            a = 2.0 * math.pi * (k + float(rng.uniform(-0.3, 0.3))) / n
            angles.append(a)
            radii.append(1.0 + a2 * _q(math.cos(2 * a + p2)) + a3 * _q(math.cos(3 * a + p3)))
        peak = max(radii)
        radii = [v / peak for v in radii]
        return _place_polygon(_radial_polygon(angles, radii), cx, cy, r, angle)
    if kind == "l_shape":
        t = float(rng.uniform(0.3, 0.5))
        unit = [(-0.7, -0.7), (0.7, -0.7), (0.7, -0.7 + 1.4 * t), (-0.7 + 1.4 * t, -0.7 + 1.4 * t),
                (-0.7 + 1.4 * t, 0.7), (-0.7, 0.7)]
        return _place_polygon(unit, cx, cy, r, angle)
    if kind == "t_shape":
        t = float(rng.uniform(0.15, 0.25))
        unit = [(-0.75, -0.75), (0.75, -0.75), (0.75, -0.75 + 2 * t), (t, -0.75 + 2 * t),
                (t, 0.75), (-t, 0.75), (-t, -0.75 + 2 * t), (-0.75, -0.75 + 2 * t)]
        return _place_polygon(unit, cx, cy, r, angle)
    if kind == "arrow":
        t = float(rng.uniform(0.12, 0.22))
        head = float(rng.uniform(0.4, 0.6))
        unit = [(-1.0, -t), (1.0 - head, -t), (1.0 - head, -head), (1.0, 0.0),
                (1.0 - head, head), (1.0 - head, t), (-1.0, t)]
        return _place_polygon(unit, cx, cy, r, angle)
    if kind == "pie":
        half = float(rng.uniform(0.35, 0.9)) * math.pi  # from a narrow slice to a "pac-man"
        return _Primitive(_sdf_pie(cx, cy, r, half, angle), box)
    # open arc: clearly not a closed ring
    thickness = r * float(rng.uniform(0.2, 0.45))
    half = float(rng.uniform(0.3, 0.65)) * math.pi
    rc = r - 0.5 * thickness
    return _Primitive(_sdf_arc(cx, cy, rc, thickness, half, angle), box)


def _make_blob(rng: np.random.Generator, cx: float, cy: float, r: float) -> _Primitive:
    """Irregular smooth blob: a 32-gon whose radius is modulated by low harmonics."""
    n = 32
    amps = rng.uniform(0.0, 0.22, 3)
    phases = rng.uniform(0.0, 2.0 * math.pi, 3)
    angles, radii = [], []
    for k in range(n):
        a = 2.0 * math.pi * k / n
        rad = 1.0
        for j in range(3):
            rad += float(amps[j]) * _q(math.cos((j + 2) * a + float(phases[j])))
        angles.append(a)
        radii.append(rad)
    sx, sy = _aspect(rng, 0.5, 2.0)
    return _place_polygon(_radial_polygon(angles, radii), cx, cy, r,
                          float(rng.uniform(0, 2 * math.pi)), sx, sy)


# --------------------------------------------------------------------------- #
# Rendering
# --------------------------------------------------------------------------- #
@dataclass
class _Region:
    """Integer pixel window ``[x0, x1) x [y0, y1)`` (may extend outside the image)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @classmethod
    def around(cls, ext: tuple[float, float, float, float], pad: int = 2) -> "_Region":
        return cls(math.floor(ext[0]) - pad, math.floor(ext[1]) - pad,
                   math.ceil(ext[2]) + pad, math.ceil(ext[3]) + pad)

    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre coordinates: px of shape ``(1, w)`` and py of shape ``(h, 1)``, float64."""
        px = (np.arange(self.x0, self.x1, dtype=np.float64) + 0.5)[None, :]
        py = (np.arange(self.y0, self.y1, dtype=np.float64) + 0.5)[:, None]
        return px, py

    def clip(self, w: int, h: int) -> tuple[slice, slice, slice, slice] | None:
        """Return ``(img_rows, img_cols, local_rows, local_cols)`` slices, or None if disjoint."""
        cx0, cy0 = max(self.x0, 0), max(self.y0, 0)
        cx1, cy1 = min(self.x1, w), min(self.y1, h)
        if cx0 >= cx1 or cy0 >= cy1:
            return None
        return (slice(cy0, cy1), slice(cx0, cx1),
                slice(cy0 - self.y0, cy1 - self.y0), slice(cx0 - self.x0, cx1 - self.x0))


class _Canvas:
    """Float image ``(H, W, 3)`` float64 plus an ``(H, W)`` int32 owner map."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.h, self.w = image.shape[:2]
        self.owner = np.full((self.h, self.w), _OWNER_BACKGROUND, dtype=np.int32)

    def sample(self, x: float, y: float) -> np.ndarray:
        """Colour under pixel ``(x, y)`` (clamped into the image), float64 ``(3,)``."""
        xi = min(max(int(math.floor(x)), 0), self.w - 1)
        yi = min(max(int(math.floor(y)), 0), self.h - 1)
        return self.image[yi, xi].copy()

    def draw(self, prim: _Primitive,
             fill: Callable[[np.ndarray, np.ndarray], np.ndarray] | np.ndarray,
             owner_id: int, opacity: float = 1.0, softness: float = 1.0,
             border: tuple[float, np.ndarray] | None = None) -> tuple[_Region, int]:
        """Composite ``prim`` onto the canvas.

        Args:
            prim: the primitive.
            fill: a colour ``(3,)`` or a function of (px ``(1, w)``, py ``(h, 1)``)
                returning ``(h, w, 3)`` colours for the primitive's region.
            owner_id: written to the owner map where ``sdf <= 0`` (if ``opacity >= 0.5``).
            opacity: global opacity in ``[0, 1]``.
            softness: edge width in pixels (1 = anti-aliased hard edge).
            border: optional ``(width_px, colour (3,))`` of an inner border.

        Returns:
            The unclipped region and the primitive's full pixel count (``sdf <= 0``),
            including any part outside the image.
        """
        region = _Region.around(prim.extent, pad=2 + int(math.ceil(softness)))
        px, py = region.coords()
        sdf = prim.sdf(px, py)
        full_mask = sdf <= 0.0
        full_count = int(np.count_nonzero(full_mask))
        sl = region.clip(self.w, self.h)
        if sl is None:
            return region, full_count
        rows, cols, lrows, lcols = sl
        sdf_c = sdf[lrows, lcols]
        colour = (fill(px, py)[lrows, lcols] if callable(fill)
                  else np.asarray(fill, dtype=np.float64))
        if border is not None:
            bw, bcol = border
            alpha_out = np.clip(0.5 - sdf_c / softness, 0.0, 1.0) * opacity
            self._blend(rows, cols, np.asarray(bcol, dtype=np.float64), alpha_out)
            alpha_in = np.clip(0.5 - (sdf_c + bw) / softness, 0.0, 1.0) * opacity
            self._blend(rows, cols, colour, alpha_in)
        else:
            alpha = np.clip(0.5 - sdf_c / softness, 0.0, 1.0) * opacity
            self._blend(rows, cols, colour, alpha)
        if opacity >= 0.5:
            own = self.owner[rows, cols]
            own[full_mask[lrows, lcols]] = owner_id
        return region, full_count

    def _blend(self, rows: slice, cols: slice, colour: np.ndarray, alpha: np.ndarray) -> None:
        a = alpha[..., None]
        dst = self.image[rows, cols]
        self.image[rows, cols] = dst * (1.0 - a) + colour * a


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Textured background, float64 ``(h, w, 3)``."""
    base = rng.uniform(25.0, 230.0, 3)
    px = (np.arange(w, dtype=np.float64) + 0.5)[None, :]
    py = (np.arange(h, dtype=np.float64) + 0.5)[:, None]
    # linear gradient in a random direction, ramp in [-1, 1]
    g = _unit_vector(rng, 2)
    ramp = ((px / w - 0.5) * float(g[0]) + (py / h - 0.5) * float(g[1])) * 2.0
    img = base + ramp[..., None] * rng.uniform(-60.0, 60.0, 3)
    # coarse colour clouds
    k = int(rng.integers(2, 5))
    img = img + (_upsample_bilinear(rng.standard_normal((k, k, 3)), h, w)
                 * float(rng.uniform(8.0, 35.0)))
    # finer luminance noise
    kf_y = max(2, h // int(rng.integers(6, 14)))
    kf_x = max(2, w // int(rng.integers(6, 14)))
    img = img + (_upsample_bilinear(rng.standard_normal((kf_y, kf_x, 1)), h, w)
                 * float(rng.uniform(0.0, 18.0)))
    u = rng.random()
    if u < 0.3:  # faint texture
        c, s = _cos_sin(float(rng.uniform(0.0, 2.0 * math.pi)))
        period = float(rng.uniform(4.0, 16.0))
        amp = rng.uniform(-25.0, 25.0, 3)
        tu = (px * c + py * s) / period
        if u < 0.15:
            pattern = _triangle_wave(tu) - 0.5
        else:
            tv = (py * c - px * s) / period
            pattern = (np.mod(np.floor(tu) + np.floor(tv), 2.0) - 0.5) * 0.6
        img = img + pattern[..., None] * amp
    return np.clip(img, 0.0, 255.0)


def _contrasting_colour(rng: np.random.Generator, bg: np.ndarray,
                        min_contrast: float = 22.0) -> np.ndarray:
    """Random colour at a random RGB distance (contrast) from ``bg`` (``(3,)`` float64).

    The requested distance is uniform in ``[min_contrast, 150]``; clipping to
    ``[0, 255]`` can reduce it, in which case the opposite direction is tried.
    Returns a float64 array of shape ``(3,)``.
    """
    contrast = float(rng.uniform(min_contrast, 150.0))
    d = _unit_vector(rng, 3)
    if rng.random() < 0.5:  # bias half of the colours towards luminance contrast
        d = d * 0.5 + (0.5 / math.sqrt(3.0)) * (1.0 if rng.random() < 0.5 else -1.0)
    best = None
    best_dist = -1.0
    for sign in (1.0, -1.0):
        col = np.clip(bg + sign * contrast * d, 0.0, 255.0)
        diff = col - bg
        dist = math.sqrt(sum(float(t) * float(t) for t in diff))
        if dist > best_dist:
            best, best_dist = col, dist
    return best  # type: ignore[return-value]


def _make_fill(rng: np.random.Generator, base: np.ndarray, cx: float, cy: float, r: float
               ) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | np.ndarray:
    """Random fill around colour ``base``: solid, gradient, noise texture or stripes."""
    u = rng.random()
    if u < 0.4:
        return base
    if u < 0.65:  # linear gradient across the object
        c, s = _cos_sin(float(rng.uniform(0.0, 2.0 * math.pi)))
        amp = rng.uniform(-45.0, 45.0, 3)

        def gradient(px: np.ndarray, py: np.ndarray) -> np.ndarray:
            t = ((px - cx) * c + (py - cy) * s) / max(r, 1.0)
            return np.clip(base + t[..., None] * amp, 0.0, 255.0)

        return gradient
    if u < 0.85:  # smooth noise texture
        k = int(rng.integers(2, 6))
        chans = 3 if rng.random() < 0.5 else 1
        grid = rng.standard_normal((k, k, chans))
        amp = float(rng.uniform(10.0, 35.0))

        def texture(px: np.ndarray, py: np.ndarray) -> np.ndarray:
            noise = _upsample_bilinear(grid, py.shape[0], px.shape[1])
            return np.clip(base + noise * amp, 0.0, 255.0)

        return texture
    # stripes
    c, s = _cos_sin(float(rng.uniform(0.0, 2.0 * math.pi)))
    period = float(rng.uniform(2.5, 8.0))
    amp = rng.uniform(-50.0, 50.0, 3)

    def stripes(px: np.ndarray, py: np.ndarray) -> np.ndarray:
        t = _triangle_wave((px * c + py * s) / period) - 0.5
        return np.clip(base + t[..., None] * amp, 0.0, 255.0)

    return stripes


def _random_line(rng: np.random.Generator, w: int, h: int) -> _Primitive:
    x0, y0 = float(rng.uniform(0, w)), float(rng.uniform(0, h))
    length = float(rng.uniform(0.15, 1.0)) * max(w, h)
    c, s = _cos_sin(float(rng.uniform(0.0, 2.0 * math.pi)))
    x1, y1 = x0 + c * length, y0 + s * length
    rad = float(rng.uniform(0.5, 1.8))
    ext = (min(x0, x1) - rad, min(y0, y1) - rad, max(x0, x1) + rad, max(y0, y1) + rad)
    # clamp the window to the image neighbourhood to keep it small
    ext = (max(ext[0], -4.0), max(ext[1], -4.0), min(ext[2], w + 4.0), min(ext[3], h + 4.0))
    return _Primitive(_sdf_capsule(x0, y0, x1, y1, rad), ext)


@dataclass
class _ImageRecord:
    width: int
    height: int
    pixels: np.ndarray  # (H, W, 3) uint8
    annotations: list[dict]  # category_id, bbox, area, segmentation (no ids yet)


def _render_image(rng: np.random.Generator, image_size: int | tuple[int, int], max_objects: int,
                  empty: bool) -> _ImageRecord:
    """Render one image and its visible-mask annotations."""
    if isinstance(image_size, tuple):
        lo, hi = image_size
        w = int(rng.integers(lo, hi + 1))
        h = int(rng.integers(lo, hi + 1))
    else:
        w = h = int(image_size)
    side = min(w, h)
    size_lo = min(_MIN_OBJECT_SIZE, _MAX_OBJECT_FRACTION * side)
    size_hi = max(size_lo, _MAX_OBJECT_FRACTION * side)
    log_ratio = math.log(size_hi / size_lo)

    def sample_size() -> float:
        return _q(size_lo * math.exp(float(rng.random()) * log_ratio))

    canvas = _Canvas(_background(rng, h, w))

    # clutter below the objects: blobs and lines
    for _ in range(int(rng.integers(0, 4))):
        r = 0.5 * sample_size() * float(rng.uniform(0.8, 1.6))
        prim = _make_blob(rng, float(rng.uniform(0, w)), float(rng.uniform(0, h)), r)
        col = _contrasting_colour(rng, canvas.sample(*_centre(prim)))
        canvas.draw(prim, col, _OWNER_CLUTTER, opacity=float(rng.uniform(0.25, 0.9)),
                    softness=float(rng.uniform(1.0, 5.0)))
    for _ in range(int(rng.integers(0, 5))):
        prim = _random_line(rng, w, h)
        col = _contrasting_colour(rng, canvas.sample(*_centre(prim)))
        canvas.draw(prim, col, _OWNER_CLUTTER, opacity=float(rng.uniform(0.4, 1.0)))

    # objects and distractors, interleaved in random order
    n_obj = 0 if empty or max_objects <= 0 else int(rng.integers(1, max_objects + 1))
    n_dis = int(rng.integers(0, 4))
    kinds = np.array([0] * n_obj + [1] * n_dis, dtype=np.int64)
    kinds = kinds[rng.permutation(len(kinds))] if len(kinds) else kinds
    centres: list[tuple[float, float, float]] = []
    objects: list[tuple[int, _Region, int]] = []  # (category index, region, full count)
    for kind in kinds:
        size = sample_size()
        r = 0.5 * size
        if centres and rng.random() < _NEAR_PLACEMENT_PROB:
            ox, oy, orad = centres[int(rng.integers(len(centres)))]
            d = _unit_vector(rng, 2)
            dist = float(rng.uniform(0.4, 1.1)) * (orad + r)
            cx, cy = ox + float(d[0]) * dist, oy + float(d[1]) * dist
            cx = min(max(cx, 0.3 * r), w - 0.3 * r)
            cy = min(max(cy, 0.3 * r), h - 0.3 * r)
        else:
            cx = _uniform_centre(rng, w, r)
            cy = _uniform_centre(rng, h, r)
        centres.append((cx, cy, r))
        if kind == 0:
            cls_idx = int(rng.integers(len(SYNTHETIC_CLASSES)))
            prim = _make_object(SYNTHETIC_CLASSES[cls_idx], rng, cx, cy, size)
            owner_id = len(objects)
        else:
            cls_idx = -1
            prim = _make_distractor(rng, cx, cy, size)
            owner_id = _OWNER_CLUTTER
        # tiny shapes get a higher minimum contrast so that they stay learnable
        base = _contrasting_colour(rng, canvas.sample(cx, cy), 40.0 if size < 16.0 else 22.0)
        fill = _make_fill(rng, base, cx, cy, r)
        border = None
        if rng.random() < 0.25:
            bw = float(rng.uniform(1.0, max(1.5, 0.15 * r)))
            border = (bw, _contrasting_colour(rng, base))
        region, full = canvas.draw(prim, fill, owner_id, border=border)
        if kind == 0:
            objects.append((cls_idx, region, full))

    # clutter above the objects
    for _ in range(int(rng.integers(0, 3))):
        prim = _random_line(rng, w, h)
        col = _contrasting_colour(rng, canvas.sample(*_centre(prim)))
        canvas.draw(prim, col, _OWNER_CLUTTER, opacity=float(rng.uniform(0.5, 1.0)))

    # sensor effects
    img = canvas.image
    if rng.random() < 0.35:
        img = _blur121(img)
    sigma = float(rng.uniform(2.0, 10.0))
    img = img + rng.standard_normal(img.shape) * sigma
    pixels = np.clip(np.rint(img), 0.0, 255.0).astype(np.uint8)

    annotations = []
    for obj_id, (cls_idx, region, full) in enumerate(objects):
        ann = _annotate(canvas.owner, obj_id, region, full)
        if ann is not None:
            ann["category_id"] = cls_idx + 1
            annotations.append(ann)
    return _ImageRecord(w, h, pixels, annotations)


def _centre(prim: _Primitive) -> tuple[float, float]:
    e = prim.extent
    return 0.5 * (e[0] + e[2]), 0.5 * (e[1] + e[3])


def _uniform_centre(rng: np.random.Generator, n: int, r: float) -> float:
    """Centre coordinate along an axis of length ``n`` so that at most ~30 % of ``r`` sticks out."""
    lo, hi = 0.7 * r, n - 0.7 * r
    if lo >= hi:
        lo, hi = 0.35 * n, 0.65 * n
    return float(rng.uniform(lo, hi))


def _blur121(img: np.ndarray) -> np.ndarray:
    """Separable ``[1, 2, 1] / 4`` blur with edge replication; ``(H, W, 3)`` float64."""
    p = np.pad(img, ((1, 1), (0, 0), (0, 0)), mode="edge")
    img = (p[:-2] + 2.0 * p[1:-1] + p[2:]) * 0.25
    p = np.pad(img, ((0, 0), (1, 1), (0, 0)), mode="edge")
    return (p[:, :-2] + 2.0 * p[:, 1:-1] + p[:, 2:]) * 0.25


def _annotate(owner: np.ndarray, obj_id: int, region: _Region, full: int) -> dict | None:
    """COCO fields of object ``obj_id`` from its visible pixels, or None if it is dropped."""
    h, w = owner.shape
    sl = region.clip(w, h)
    if sl is None or full <= 0:
        return None
    rows, cols = sl[0], sl[1]
    local = owner[rows, cols] == obj_id
    visible = int(np.count_nonzero(local))
    if visible == 0 or visible < _MIN_VISIBLE_FRACTION * full:
        return None
    ys, xs = np.nonzero(local)
    x0 = int(xs.min()) + cols.start
    x1 = int(xs.max()) + cols.start
    y0 = int(ys.min()) + rows.start
    y1 = int(ys.max()) + rows.start
    bw, bh = x1 - x0 + 1, y1 - y0 + 1
    if bw < _MIN_BOX_SIDE or bh < _MIN_BOX_SIDE:
        return None
    full_mask = np.zeros((h, w), dtype=np.uint8, order="F")
    full_mask[rows, cols] = local
    rle = mask_utils.encode(full_mask)
    rle["counts"] = rle["counts"].decode("ascii")
    return {
        "bbox": [float(x0), float(y0), float(bw), float(bh)],
        "area": float(visible),
        "segmentation": {"size": [int(rle["size"][0]), int(rle["size"][1])],
                         "counts": rle["counts"]},
    }


# --------------------------------------------------------------------------- #
# Data-set level
# --------------------------------------------------------------------------- #
def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODES[split], 1, index]))


def _empty_indices(seed: int, split: str, n: int) -> set[int]:
    """Indices of the images of a split that get no objects (about 5 %, at least 1 if n >= 8)."""
    n_empty = int(round(_EMPTY_FRACTION * n))
    if n_empty == 0 and n >= 8:
        n_empty = 1
    if n_empty == 0:
        return set()
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODES[split], 0, 0]))
    return {int(i) for i in rng.permutation(n)[:n_empty]}


def _normalise_size(image_size: int | Sequence[int]) -> int | tuple[int, int]:
    if isinstance(image_size, (int, np.integer)):
        s = int(image_size)
        if s < 16:
            raise ValueError(f"image_size must be >= 16, got {s}")
        return s
    vals = tuple(int(v) for v in image_size)
    if len(vals) == 1:
        return _normalise_size(vals[0])
    if len(vals) != 2 or vals[0] > vals[1] or vals[0] < 16:
        raise ValueError("image_size must be an int >= 16 or (min, max) with 16 <= min <= max, "
                         f"got {image_size}")
    return vals if vals[0] != vals[1] else vals[0]


def _write_json(path: str, obj: dict) -> None:
    with atomic_write(path) as f:
        f.write(json.dumps(obj, separators=(",", ":")))
        f.write("\n")


def _manifest_params(num_train: int, num_val: int, image_size: int | tuple[int, int], seed: int,
                     max_objects: int) -> dict:
    return {
        "num_train": num_train,
        "num_val": num_val,
        "image_size": list(image_size) if isinstance(image_size, tuple) else image_size,
        "seed": seed,
        "max_objects": max_objects,
    }


def _is_complete(out_dir: str, version: str, params: dict) -> bool:
    manifest_path = os.path.join(out_dir, "manifest.json")
    try:
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return False
    if manifest.get("version") != version or manifest.get("params") != params:
        return False
    for split, n in (("train", params["num_train"]), ("val", params["num_val"])):
        if not os.path.isfile(os.path.join(out_dir, "annotations", f"instances_{split}.json")):
            return False
        for i in range(n):
            if not os.path.isfile(os.path.join(out_dir, split, f"{i:06d}.png")):
                return False
    return True


def _generate_split(out_dir: str, split: str, n: int, image_size: int | tuple[int, int], seed: int,
                    max_objects: int) -> dict:
    img_dir = os.path.join(out_dir, split)
    os.makedirs(img_dir, exist_ok=True)
    for name in os.listdir(img_dir):  # remove stale images of an earlier, different run
        if _FILE_RE.match(name):
            os.remove(os.path.join(img_dir, name))
    empty = _empty_indices(seed, split, n)
    images, annotations = [], []
    ann_id = 1
    for i in range(n):
        rec = _render_image(_image_rng(seed, split, i), image_size, max_objects, i in empty)
        file_name = f"{i:06d}.png"
        if not cv2.imwrite(os.path.join(img_dir, file_name), rec.pixels):
            raise OSError(f"cv2.imwrite failed for {os.path.join(img_dir, file_name)}")
        image_id = i + 1
        images.append({"id": image_id, "file_name": file_name, "width": rec.width,
                       "height": rec.height})
        for ann in rec.annotations:
            annotations.append({
                "id": ann_id,
                "image_id": image_id,
                "category_id": ann["category_id"],
                "bbox": ann["bbox"],
                "area": ann["area"],
                "iscrowd": 0,
                "segmentation": ann["segmentation"],
            })
            ann_id += 1
    return {
        "info": {"description": f"mmkd synthetic shapes ({split})", "version": GENERATOR_VERSION},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": name, "supercategory": "shape"}
                       for k, name in enumerate(SYNTHETIC_CLASSES)],
    }


def generate_synthetic_coco(out_dir: str, num_train: int = 400, num_val: int = 100,
                            image_size: int | tuple[int, int] = 160, seed: int = 0,
                            max_objects: int = 8, force: bool = False) -> dict:
    """Generate (or reuse) the synthetic shapes data set in COCO format.

    Layout::

        out_dir/train/000000.png ...        # uint8 3-channel PNGs
        out_dir/val/000000.png ...
        out_dir/annotations/instances_train.json
        out_dir/annotations/instances_val.json
        out_dir/manifest.json               # generator version + parameters

    If ``manifest.json`` matches the requested parameters and every file exists,
    nothing is written and the paths are returned at once.

    Args:
        out_dir: output folder (created if needed).
        num_train: number of training images.
        num_val: number of validation images.
        image_size: an int for square ``S x S`` images, or ``(min, max)`` to draw each
            image's width and height independently and uniformly from ``[min, max]``.
        seed: non-negative base seed; image ``i`` of a split is generated from
            ``(seed, split, i)`` only (plus the split-level choice of empty images).
        max_objects: maximum number of class objects drawn per image (before the
            visibility filter); non-empty images get 1 to ``max_objects``.
        force: regenerate even if a matching data set exists.

    Returns:
        dict with absolute paths ``data_root``, ``train_ann``, ``val_ann``,
        ``train_img_dir`` and ``val_img_dir``.
    """
    if num_train < 0 or num_val < 0:
        raise ValueError("num_train and num_val must be >= 0")
    if seed < 0:
        raise ValueError("seed must be >= 0")
    if max_objects < 0:
        raise ValueError("max_objects must be >= 0")
    size = _normalise_size(image_size)
    root = os.path.abspath(out_dir)
    paths = {
        "data_root": root,
        "train_ann": os.path.join(root, "annotations", "instances_train.json"),
        "val_ann": os.path.join(root, "annotations", "instances_val.json"),
        "train_img_dir": os.path.join(root, "train"),
        "val_img_dir": os.path.join(root, "val"),
    }
    params = _manifest_params(int(num_train), int(num_val), size, int(seed), int(max_objects))
    if not force and _is_complete(root, GENERATOR_VERSION, params):
        return paths

    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    manifest_path = os.path.join(root, "manifest.json")
    if os.path.exists(manifest_path):
        os.remove(manifest_path)  # an interrupted run must not look complete
    counts = {}
    for split, n in (("train", params["num_train"]), ("val", params["num_val"])):
        coco = _generate_split(root, split, n, size, params["seed"], params["max_objects"])
        _write_json(paths[f"{split}_ann"], coco)
        counts[split] = {"images": len(coco["images"]), "annotations": len(coco["annotations"])}
    _write_json(manifest_path, {
        "generator": "mmkd.datasets.synthetic",
        "version": GENERATOR_VERSION,
        "params": params,
        "classes": list(SYNTHETIC_CLASSES),
        "counts": counts,
    })
    return paths

"""Overlay pictures of one case: the image with its label map drawn over it, three orthogonal slices through the
centre of each connected structure, in RAS orientation and physical proportions.

Geometry: volumes are read with SimpleITK (world coordinates in ITK's LPS convention). Each array axis goes to the
world axis its direction vector points along most (a permutation and flips, no resampling: an oblique acquisition
is shown in its nearest orthogonal orientation, and the picture says by how many degrees), then to RAS: axis 0 runs
from left to Right, axis 1 from posterior to Anterior, axis 2 from inferior to Superior. Slices are sampled on a
square grid in millimetres, so a structure that is square in the body is square in the picture whatever the voxel
spacing. Display: neurological convention (the patient's left on the picture's left) in axial and coronal views,
anterior on the left in sagittal views; every panel carries its side letters.
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hippo_peft.errors import InputError

ALPHA = 0.45  # fill opacity of the overlay; outlines are opaque
# tab10 without its grey (a grey overlay vanishes on a grey-scale image)
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (188, 189, 34), (23, 190, 207)]
BACKGROUND, TEXT, MARKER = (24, 24, 24), (235, 235, 235), (255, 230, 0)
# name, fixed axis, horizontal axis, +1 if columns grow with its index, vertical axis (top = high index), letters
VIEWS = (("axial", 2, 0, +1, 1, ("L", "R", "A", "P")),
         ("coronal", 1, 0, +1, 2, ("L", "R", "S", "I")),
         ("sagittal", 0, 1, -1, 2, ("A", "P", "S", "I")))
GAP = 6


def label_colour(index: int) -> tuple[int, int, int]:
    """Colour of the ``index``-th foreground label (0-based, in the label list's order)."""
    return PALETTE[index % len(PALETTE)]


@dataclass
class Volume:
    """A 3D array in RAS axis order with its spacing (mm) along those axes."""
    array: np.ndarray
    spacing: tuple[float, float, float]
    oblique_deg: float = 0.0


def header_geometry(path: str | Path) -> dict:
    """Size, spacing, origin and direction from the header only (no voxel data read).

    Raises:
        ValueError: SimpleITK cannot read the header, or the image is not 3D.
    """
    import SimpleITK as sitk
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise InputError(f"{Path(path).name}: SimpleITK cannot read it ({str(e).strip().splitlines()[-1]})") from None
    if reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 1:
        raise InputError(f"{Path(path).name}: not a single-channel 3D image ({reader.GetDimension()}D, "
                         f"{reader.GetNumberOfComponents()} component(s)); give one file per channel, nnU-Net's way.")
    return {"size": tuple(reader.GetSize()), "spacing": tuple(reader.GetSpacing()),
            "origin": tuple(reader.GetOrigin()), "direction": tuple(reader.GetDirection())}


def geometry_difference(a: dict, b: dict) -> str | None:
    """None when two headers describe the same voxel grid, else what differs (size, spacing, origin, direction)."""
    if a["size"] != b["size"]:
        return f"size {a['size']} vs {b['size']}"
    for key, tol in (("spacing", 1e-4), ("origin", 1e-3), ("direction", 1e-4)):
        if not np.allclose(a[key], b[key], rtol=0, atol=tol * max(1.0, float(np.max(np.abs(a[key]))))):
            fmt = ", ".join
            return (f"{key} ({fmt(f'{v:.4g}' for v in a[key])}) vs ({fmt(f'{v:.4g}' for v in b[key])})")
    return None


def to_ras(array_ijk: np.ndarray, spacing_ijk, direction) -> Volume:
    """Permute and flip an array in index order (i, j, k) with an ITK direction matrix into RAS axis order."""
    from scipy.optimize import linear_sum_assignment
    d = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(direction, dtype=float).reshape(3, 3)  # LPS -> RAS world
    rows, axes = linear_sum_assignment(-np.abs(d))  # world axis p <- array axis axes[p], one each
    out = array_ijk.transpose(axes)
    for p in range(3):
        if d[rows[p], axes[p]] < 0:
            out = np.flip(out, p)
    cos = np.abs(d[rows, axes]) / np.linalg.norm(d[:, axes], axis=0)
    return Volume(np.ascontiguousarray(out), tuple(float(spacing_ijk[a]) for a in axes),
                  float(np.degrees(np.arccos(np.clip(cos.min(), 0.0, 1.0)))))


def read_volume(path: str | Path) -> Volume:
    """Read a 3D image or label map with SimpleITK into RAS order.

    Raises:
        ValueError: unreadable or not 3D.
    """
    import SimpleITK as sitk
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise InputError(f"{Path(path).name}: SimpleITK cannot read it ({str(e).strip().splitlines()[-1]})") from None
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{Path(path).name}: not a single-channel 3D image.")
    return to_ras(sitk.GetArrayFromImage(img).transpose(2, 1, 0), img.GetSpacing(), img.GetDirection())


@dataclass
class Structure:
    """One connected structure: its centre voxel (RAS index, inside the structure) and its reach from there (mm)."""
    centre: tuple[int, int, int]
    reach_mm: tuple[float, float, float]
    voxels: int


def find_structures(mask: np.ndarray, spacing, max_structures: int = 2, min_fraction: float = 0.05
                    ) -> tuple[list[Structure], int]:
    """The largest connected structures (26-connectivity) of ``mask``: at most ``max_structures``, each at least
    ``min_fraction`` of the largest. Returns them and the number of components in all.

    The centre is the structure's voxel nearest (in mm) to its centroid, so a slice through it always cuts it.
    """
    from scipy import ndimage
    labelled, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return [], 0
    sizes = np.bincount(labelled.ravel())[1:]
    order = np.argsort(-sizes, kind="stable")
    keep = [int(i) for i in order if sizes[i] >= min_fraction * sizes[order[0]]][:max_structures]
    boxes = ndimage.find_objects(labelled)
    sp = np.asarray(spacing, dtype=float)
    out = []
    for i in keep:
        box = boxes[i]
        lo = np.array([s.start for s in box])
        coords = np.argwhere(labelled[box] == i + 1) + lo
        nearest = coords[np.argmin((((coords - coords.mean(0)) * sp) ** 2).sum(1))]
        reach = np.maximum(nearest - coords.min(0), coords.max(0) - nearest) + 0.5
        out.append(Structure(tuple(int(c) for c in nearest), tuple(float(r) for r in reach * sp), int(sizes[i])))
    return out, int(n)


def _sample(volume: Volume, centre, view, half_mm: tuple[float, float], mm_px: float, order: int, cval: float):
    """A 2D slice of ``view`` through ``centre``, ``2 * half_mm`` wide and high, on a grid of ``mm_px`` mm."""
    from scipy.ndimage import map_coordinates
    _, fixed, h_axis, h_sign, v_axis, _ = view
    w, h = (max(1, int(round(2 * s / mm_px))) for s in half_mm)
    cols = (np.arange(w) + 0.5 - w / 2) * mm_px
    rows = (np.arange(h) + 0.5 - h / 2) * mm_px
    plane = np.take(volume.array, centre[fixed], axis=fixed).astype(np.float32)
    h_idx = centre[h_axis] + h_sign * cols / volume.spacing[h_axis]
    v_idx = centre[v_axis] - rows / volume.spacing[v_axis]  # row 0 at the top = the high end of the axis
    grid_v, grid_h = np.meshgrid(v_idx, h_idx, indexing="ij")
    # the plane keeps the other two axes in increasing order
    coords = [grid_h, grid_v] if h_axis < v_axis else [grid_v, grid_h]
    return map_coordinates(plane, coords, order=order, mode="constant", cval=cval, prefilter=False)


def _overlay(gray: np.ndarray, labels: np.ndarray, values: list[int]) -> np.ndarray:
    """RGB panel: each label filled at ALPHA over the grey image, its outline opaque."""
    from scipy.ndimage import binary_erosion
    rgb = np.repeat(gray[..., None].astype(np.float32), 3, axis=2)
    for i, v in enumerate(values):
        m = labels == v
        if not m.any():
            continue
        colour = np.asarray(label_colour(i), dtype=np.float32)
        rgb[m] = (1 - ALPHA) * rgb[m] + ALPHA * colour
        rgb[m & ~binary_erosion(m, border_value=1)] = colour
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def _font(size: int):
    from PIL import ImageFont
    return ImageFont.load_default(size=size)


def _markers(draw, box, letters) -> None:
    x0, y0, x1, y1 = box
    font = _font(12)
    left, right, top, bottom = letters
    for text, (x, y), anchor in ((left, (x0 + 3, (y0 + y1) / 2), "lm"), (right, (x1 - 3, (y0 + y1) / 2), "rm"),
                                 (top, ((x0 + x1) / 2, y0 + 2), "mt"), (bottom, ((x0 + x1) / 2, y1 - 2), "mb")):
        draw.text((x, y), text, fill=MARKER, font=font, anchor=anchor, stroke_width=2, stroke_fill=(0, 0, 0))


@dataclass
class Picture:
    """A rendered case: the picture and where each panel lies in it (x0, y0, x1, y1 in pixels)."""
    image: object  # PIL.Image.Image
    panels: list[dict] = field(default_factory=list)


def render_case(image: Volume, labels: Volume, values: list[int], names: list[str], title: str,
                lines: list[str], reference: Volume | None = None, max_structures: int = 2,
                margin_mm: float = 10.0, panel_px: int = 180, window: tuple[float, float] = (1.0, 99.0)) -> Picture:
    """The overlay picture of one case.

    Args:
        image: the case's image (one channel), RAS order, same grid as ``labels``.
        labels: the label map (prediction).
        values: the foreground label values, in the order of ``names`` (this order gives the colours).
        names: label names for the legend.
        title: drawn at the top (the case id).
        lines: further text under the title (flags, volumes, Dice).
        reference: a reference label map on the same grid, drawn beside the prediction.
        max_structures: connected structures shown, largest first (of the prediction and reference together).
        margin_mm: added around each structure's reach.
        panel_px: size of the largest panel side of a structure's row.
        window: percentiles of the image intensities around each structure that span black to white.

    Raises:
        ValueError: the arrays differ in shape, or the prediction (and reference) hold no foreground.
    """
    from PIL import Image, ImageDraw
    for other, what in ((labels, "label map"), (reference, "reference")):
        if other is not None and other.array.shape != image.array.shape:
            raise InputError(f"{title}: the {what} has shape {other.array.shape}, the image {image.array.shape}.")
    fg = labels.array > 0
    if reference is not None:
        fg = fg | (reference.array > 0)
    structures, n_components = find_structures(fg, labels.spacing, max_structures)
    if not structures:
        raise InputError(f"{title}: no foreground to draw.")
    kinds = [("prediction", labels)] + ([("reference", reference)] if reference is not None else [])
    rows, notes = [], []
    for s in structures:
        half = [r + margin_mm for r in s.reach_mm]
        mm_px = max(2 * max(half[v[2]], half[v[4]]) for v in VIEWS) / panel_px
        lo = [max(0, int(c - h / sp)) for c, h, sp in zip(s.centre, half, image.spacing)]
        hi = [int(c + h / sp) + 1 for c, h, sp in zip(s.centre, half, image.spacing)]
        box = image.array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        low, high = (float(v) for v in np.nanpercentile(box, window)) if np.isfinite(box).any() else (0.0, 1.0)
        high = high if high > low else low + 1.0
        row = []
        for kind, lab in kinds:
            for view in VIEWS:
                hv = (half[view[2]], half[view[4]])
                gray = _sample(image, s.centre, view, hv, mm_px, 1, low)
                gray = np.clip(np.nan_to_num((gray - low) / (high - low)), 0, 1) * 255
                lab2d = _sample(lab, s.centre, view, hv, mm_px, 0, 0).astype(np.int64)
                row.append((kind, view, _overlay(gray, lab2d, values)))
        rows.append(row)
    if n_components > len(structures):
        notes.append(f"{n_components - len(structures)} more component(s) not shown (smaller)")
    if image.oblique_deg > 1:
        notes.append(f"oblique by {image.oblique_deg:.0f} degrees: shown in the nearest orthogonal orientation")

    font_title, font = _font(16), _font(12)
    line_h = 16
    header_h = 8 + 20 + line_h * len(lines) + 4
    kind_h = 16 if reference is not None else 0
    row_sizes = [(sum(p.shape[1] for _, _, p in row) + GAP * (len(row) + 1) + (GAP * 2 if reference else 0),
                  max(p.shape[0] for _, _, p in row)) for row in rows]
    legend_h = 22 + line_h * len(notes)
    text_w = max([int(font_title.getlength(title))] + [int(font.getlength(t)) for t in lines + notes]) + 2 * GAP
    width = max([w for w, _ in row_sizes] + [text_w, 240])
    height = header_h + sum(kind_h + h + GAP for _, h in row_sizes) + legend_h
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((GAP, 8), title, fill=TEXT, font=font_title)
    for i, t in enumerate(lines):
        draw.text((GAP, 30 + i * line_h), t, fill=TEXT, font=font)
    picture = Picture(canvas)
    y = header_h
    for si, (row, (_, row_h)) in enumerate(zip(rows, row_sizes)):
        x = GAP
        for pi, (kind, view, panel) in enumerate(row):
            if reference is not None and pi == len(VIEWS):
                x += 2 * GAP  # a wider gap between prediction and reference
            if kind_h and pi % len(VIEWS) == 0:
                draw.text((x, y), f"{kind} - structure {si + 1}", fill=TEXT, font=font)
            top = y + kind_h + (row_h - panel.shape[0]) // 2
            canvas.paste(Image.fromarray(panel), (x, top))
            box = (x, top, x + panel.shape[1], top + panel.shape[0])
            _markers(draw, box, view[5])
            picture.panels.append({"structure": si, "kind": kind, "view": view[0], "box": box})
            x += panel.shape[1] + GAP
        y += kind_h + row_h + GAP
    x = GAP
    for i, name in enumerate(names):
        draw.rectangle((x, y + 4, x + 12, y + 16), fill=label_colour(i))
        draw.text((x + 16, y + 3), name, fill=TEXT, font=font)
        x += 16 + int(font.getlength(name)) + 14
    for i, t in enumerate(notes):
        draw.text((GAP, y + 22 + i * line_h), t, fill=TEXT, font=font)
    return picture


def placeholder(title: str, reason: str, size: tuple[int, int] = (560, 240)):
    """A tile that is not a picture of the case: the case id and why nothing was drawn."""
    import textwrap

    from PIL import Image, ImageDraw
    canvas = Image.new("RGB", size, (70, 20, 20))
    draw = ImageDraw.Draw(canvas)
    for x in range(-size[1], size[0], 24):  # hatching: unmistakably not an image
        draw.line((x, size[1], x + size[1], 0), fill=(90, 30, 30), width=6)
    draw.text((12, 10), title, fill=TEXT, font=_font(16))
    draw.text((12, 40), "NOT DRAWN", fill=MARKER, font=_font(16))
    for i, line in enumerate(textwrap.wrap(reason, 70)[:8]):
        draw.text((12, 66 + 16 * i), line, fill=TEXT, font=_font(12))
    return canvas


def thumbnail_data_uri(image, width: int = 300) -> str:
    """A small JPEG of ``image`` as a data URI (the page embeds its thumbnails: one file, nothing external)."""
    from PIL import Image
    im = image.copy()
    im.thumbnail((width, 10 * width), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")

"""The embedded demo dataset: procedural cartoons of the second study's ten classes.

Each class has one small drawing function (`draw_cat`, `draw_plane`, ...) that paints the object
on a transparent square layer in unit coordinates: (0, 0) is the top-left corner, (1, 1) the
bottom-right, with bold outlines and class-typical colours. `generate()` then flips and slightly
rotates that layer, crops it to the drawing, scales it to fill most of the picture, places it near
the centre on a pale background (solid, gradient or softly mottled, sometimes with faint clutter
shapes), and saves it the way a web-scraped set would look:
a mix of JPEG and PNG, about a fifth RGBA PNGs with transparent backgrounds, some grayscale and
palette images, a couple of CMYK JPEGs. On top of the `per_class` good drawings it adds the usual
scraping debris (truncated files, an HTML error page saved as .jpg, a stray notes.txt, exact
duplicates, a thumbnail below `clean.min_side`) so the clean stage has real work to do.

The pictures are meant to be learnable by small models in a few epochs from a few hundred images
(hence large objects, little clutter, backgrounds that never drown the object), but look-alike
classes keep the task honest: cat, tiger, panda and dog share one head shape (ginger cats are
tiger-coloured, tabby cats have stripes, some dogs have pointed ears), and bird, penguin and plane
share elongated bodies. Everything is drawn from `numpy` generators seeded by (seed, class, index), so
two runs with the same arguments write byte-identical files.
"""

from __future__ import annotations

import colorsys
import io
import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

log = logging.getLogger(__name__)

RGB = tuple[int, int, int]
Point = tuple[float, float]

OUTLINE: RGB = (35, 30, 30)
OUTLINE_WIDTH = 0.02     # bold cartoon outlines (a fraction of the drawing's side)
SUPERSAMPLE = 2          # drawings are painted at 2x and downscaled: cheap anti-aliasing
RGBA_SHARE = 0.2         # transparent-background PNGs
GRAY_SHARE = 0.05        # grayscale ("L") images
PALETTE_SHARE = 0.05     # palette ("P") PNGs
JPEG_SHARE = 0.7         # of the remaining RGB images
CMYK_IMAGES = 2          # CMYK JPEGs in the whole set
CORRUPT_FILES = 2        # truncated image files
DUPLICATES = 3           # exact byte copies, same class
TINY_SIDE = 20           # one thumbnail below clean.min_side
NOT_IMAGE_TEXT = (b"<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head>\n"
                  b"<body><h1>Forbidden</h1><p>You don't have permission to access this image."
                  b"</p></body></html>\n")
NOTES_TEXT = b"scraped with image-downloader; TODO remove duplicates and broken files\n"


# --- drawing in unit coordinates ---------------------------------------------------------------

class Pen:
    """`ImageDraw` on a square layer, addressed in unit coordinates (fractions of the side)."""

    def __init__(self, layer: Image.Image) -> None:
        self.draw = ImageDraw.Draw(layer)
        self.side = layer.width

    def px(self, fraction: float) -> int:
        """A length in pixels (at least 1)."""
        return max(1, round(fraction * self.side))

    def _xy(self, points: Sequence[Point]) -> list[tuple[float, float]]:
        return [(x * self.side, y * self.side) for x, y in points]

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: RGB | None,
                outline: bool = True) -> None:
        """An axis-aligned ellipse centred on (cx, cy), with a cartoon outline."""
        box = self._xy([(cx - rx, cy - ry), (cx + rx, cy + ry)])
        self.draw.ellipse(box, fill=fill, outline=OUTLINE if outline else None,
                          width=self.px(OUTLINE_WIDTH) if outline else 0)

    def circle(self, cx: float, cy: float, r: float, fill: RGB | None, outline: bool = True) -> None:
        """A circle of radius r centred on (cx, cy)."""
        self.ellipse(cx, cy, r, r, fill, outline)

    def oval(self, cx: float, cy: float, rx: float, ry: float, angle: float, fill: RGB,
             outline: bool = True) -> None:
        """An ellipse rotated by `angle` degrees (as a polygon)."""
        a = math.radians(angle)
        ts = np.linspace(0.0, 2 * math.pi, 28, endpoint=False)
        points = [(cx + rx * math.cos(t) * math.cos(a) - ry * math.sin(t) * math.sin(a),
                   cy + rx * math.cos(t) * math.sin(a) + ry * math.sin(t) * math.cos(a)) for t in ts]
        self.polygon(points, fill, outline)

    def polygon(self, points: Sequence[Point], fill: RGB, outline: bool = True) -> None:
        """A filled polygon through `points`."""
        self.draw.polygon(self._xy(points), fill=fill, outline=OUTLINE if outline else None,
                          width=self.px(OUTLINE_WIDTH) if outline else 0)

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: RGB, radius: float = 0.0) -> None:
        """A rectangle from (x0, y0) to (x1, y1) with rounded corners of `radius`."""
        self.draw.rounded_rectangle(self._xy([(x0, y0), (x1, y1)]), radius=self.px(radius), fill=fill,
                                    outline=OUTLINE, width=self.px(OUTLINE_WIDTH))

    def line(self, points: Sequence[Point], fill: RGB, width: float) -> None:
        """A polyline `width` (a fraction of the side) thick."""
        self.draw.line(self._xy(points), fill=fill, width=self.px(width), joint="curve")


def _pick(rng: np.random.Generator, colours: Sequence[RGB], jitter: int = 18,
          weights: Sequence[float] | None = None) -> RGB:
    """One of `colours` (with probabilities proportional to `weights`), each channel shifted by
    up to +-jitter."""
    p = None if weights is None else np.asarray(weights, float) / sum(weights)
    base = np.array(colours[rng.choice(len(colours), p=p)])
    return _rgb(base + rng.integers(-jitter, jitter + 1, size=3))


def _shade(colour: RGB, factor: float) -> RGB:
    """Darker (factor < 1) or lighter (factor > 1, towards white) version of a colour."""
    c = np.array(colour, dtype=float)
    c = c * factor if factor <= 1 else c + (255 - c) * (factor - 1)
    return _rgb(c)


def _rgb(values: Any) -> RGB:
    r, g, b = (int(v) for v in np.clip(np.round(values), 0, 255))
    return (r, g, b)


# --- shared parts of the look-alike classes -----------------------------------------------------

# Each class has a typical colouring; the ginger cat (tiger-like) keeps the look-alikes honest.
CAT_FUR: tuple[RGB, ...] = ((125, 128, 140), (155, 160, 175), (230, 140, 50), (235, 215, 175))
CAT_WEIGHTS = (0.35, 0.3, 0.2, 0.15)
DOG_FUR: tuple[RGB, ...] = ((150, 95, 50), (200, 150, 85), (110, 70, 40), (215, 170, 100))
TIGER_FUR: tuple[RGB, ...] = ((235, 130, 35), (220, 110, 30), (240, 150, 60))
WHITE: RGB = (245, 245, 240)
BLACK: RGB = (25, 25, 28)
PINK: RGB = (240, 150, 160)


def _head(pen: Pen, rng: np.random.Generator, fur: RGB) -> None:
    """The round head every four-legged class shares."""
    pen.ellipse(0.5, 0.52, 0.3 * rng.uniform(0.9, 1.08), 0.26 * rng.uniform(0.9, 1.1), fur)


def _body(pen: Pen, rng: np.random.Generator, fur: RGB) -> None:
    """Sometimes a body peeks out below the head."""
    if rng.random() < 0.5:
        pen.ellipse(0.5, 0.9, 0.26 * rng.uniform(0.8, 1.2), 0.18, fur)


def _pointed_ears(pen: Pen, rng: np.random.Generator, fur: RGB, inner: RGB) -> None:
    height = rng.uniform(0.1, 0.18)
    for side in (-1, 1):
        pen.polygon([(0.5 + side * 0.29, 0.44), (0.5 + side * 0.24, 0.3 - height),
                     (0.5 + side * 0.07, 0.32)], fur)
        pen.polygon([(0.5 + side * 0.24, 0.4), (0.5 + side * 0.23, 0.34 - height * 0.7),
                     (0.5 + side * 0.12, 0.34)], inner, outline=False)


def _round_ears(pen: Pen, fur: RGB, inner: RGB | None) -> None:
    for side in (-1, 1):
        pen.circle(0.5 + side * 0.22, 0.3, 0.09, fur)
        if inner is not None:
            pen.circle(0.5 + side * 0.22, 0.3, 0.045, inner, outline=False)


def _eyes(pen: Pen, rng: np.random.Generator, iris: RGB, slit: bool) -> None:
    """Two eyes with round or slit pupils, glancing a little sideways."""
    y = 0.47
    gap = rng.uniform(0.1, 0.13)
    look = rng.uniform(-0.012, 0.012)
    for side in (-1, 1):
        cx = 0.5 + side * gap
        pen.circle(cx, y, 0.04, iris)
        pen.ellipse(cx + look, y, 0.01 if slit else 0.022, 0.032 if slit else 0.022, BLACK, outline=False)
        pen.circle(cx + look + 0.008, y - 0.012, 0.007, WHITE, outline=False)


def _whiskers(pen: Pen, rng: np.random.Generator) -> None:
    for side in (-1, 1):
        for k in (-1, 0, 1):
            droop = rng.uniform(-0.02, 0.02)
            pen.line([(0.5 + side * 0.08, 0.62 + k * 0.02),
                      (0.5 + side * 0.3, 0.6 + k * 0.05 + droop)], OUTLINE, 0.006)


def _nose_and_mouth(pen: Pen, nose: RGB, size: float = 0.03) -> None:
    pen.polygon([(0.5 - size, 0.58), (0.5 + size, 0.58), (0.5, 0.58 + size * 1.1)], nose)
    pen.line([(0.5, 0.58 + size * 1.1), (0.5, 0.66), (0.45, 0.69)], OUTLINE, 0.008)
    pen.line([(0.5, 0.66), (0.55, 0.69)], OUTLINE, 0.008)


def _stripes(pen: Pen, rng: np.random.Generator, colour: RGB, thickness: float) -> None:
    """Wedge stripes on the forehead and cheeks (tigers always, tabby cats sometimes)."""
    for dx in (-0.07, 0.0, 0.07):
        top = 0.29 + rng.uniform(-0.01, 0.02)
        pen.polygon([(0.5 + dx - thickness, top), (0.5 + dx + thickness, top),
                     (0.5 + dx * 1.3, top + 0.1 + rng.uniform(0, 0.04))], colour, outline=False)
    for side in (-1, 1):
        for y in (0.5, 0.58, 0.66):
            pen.polygon([(0.5 + side * 0.3, y - thickness), (0.5 + side * 0.3, y + thickness),
                         (0.5 + side * rng.uniform(0.17, 0.21), y + 0.01)], colour, outline=False)


# --- one drawing function per class ---------------------------------------------------------------

def draw_cat(pen: Pen, rng: np.random.Generator) -> None:
    """A cat's face: pointed ears, slit pupils and whiskers; a third are striped tabbies."""
    fur = _pick(rng, CAT_FUR, weights=CAT_WEIGHTS)
    _body(pen, rng, fur)
    _pointed_ears(pen, rng, fur, PINK)
    _head(pen, rng, fur)
    if rng.random() < 0.35:
        _stripes(pen, rng, _shade(fur, 0.55), thickness=0.012)
    _eyes(pen, rng, _pick(rng, [(120, 200, 80), (230, 200, 60), (90, 160, 210)]), slit=True)
    _nose_and_mouth(pen, PINK, size=0.025)
    _whiskers(pen, rng)


def draw_tiger(pen: Pen, rng: np.random.Generator) -> None:
    """A tiger's face: orange fur, thick black stripes, white cheeks, small round ears."""
    fur = _pick(rng, TIGER_FUR, jitter=12)
    _body(pen, rng, fur)
    _round_ears(pen, fur, BLACK)
    _head(pen, rng, fur)
    _stripes(pen, rng, BLACK, thickness=0.022)
    for side in (-1, 1):
        pen.ellipse(0.5 + side * 0.09, 0.66, 0.1, 0.07, WHITE, outline=False)
    _eyes(pen, rng, (235, 180, 60), slit=False)
    _nose_and_mouth(pen, (200, 90, 90), size=0.035)
    _whiskers(pen, rng)


def draw_panda(pen: Pen, rng: np.random.Generator) -> None:
    """A panda's face: white head, black round ears and tilted black eye patches."""
    white = _pick(rng, [WHITE, (235, 232, 220)], jitter=8)
    if rng.random() < 0.5:
        pen.ellipse(0.5, 0.9, 0.28, 0.18, BLACK)
    _round_ears(pen, BLACK, None)
    _head(pen, rng, white)
    tilt = rng.uniform(20, 40)
    for side in (-1, 1):
        pen.oval(0.5 + side * 0.11, 0.49, 0.085, 0.055, -side * tilt, BLACK, outline=False)
        pen.circle(0.5 + side * 0.11, 0.47, 0.022, WHITE, outline=False)
        pen.circle(0.5 + side * 0.11, 0.47, 0.012, BLACK, outline=False)
    pen.ellipse(0.5, 0.6, 0.04, 0.028, BLACK)
    pen.line([(0.5, 0.63), (0.5, 0.67), (0.46, 0.7)], OUTLINE, 0.008)
    pen.line([(0.5, 0.67), (0.54, 0.7)], OUTLINE, 0.008)


def draw_dog(pen: Pen, rng: np.random.Generator) -> None:
    """A dog's face: floppy ears (some pointed), a pale muzzle, a big black nose, a tongue."""
    fur = _pick(rng, DOG_FUR)
    ears = _shade(fur, rng.uniform(0.55, 0.85))
    _body(pen, rng, fur)
    pointed = rng.random() < 0.3
    if pointed:
        _pointed_ears(pen, rng, ears, _shade(ears, 1.4))
    _head(pen, rng, fur)
    if not pointed:
        droop = rng.uniform(5, 25)
        for side in (-1, 1):
            pen.oval(0.5 + side * 0.29, 0.5, 0.08, 0.2, side * droop, ears)
    pen.ellipse(0.5, 0.65, 0.15, 0.1, _shade(fur, 1.5))
    if rng.random() < 0.4:
        pen.ellipse(0.5, 0.75, 0.04, 0.06, (230, 90, 110))
    _eyes(pen, rng, (90, 55, 30), slit=False)
    pen.ellipse(0.5, 0.6, 0.06, 0.04, BLACK)


def draw_bird(pen: Pen, rng: np.random.Generator) -> None:
    """A songbird side-on: round body, tail, beak, a wing up (flying) or folded (perched)."""
    colour = _pick(rng, [(50, 110, 220), (40, 165, 195), (215, 50, 45)], weights=(0.5, 0.3, 0.2))
    wing = _shade(colour, 0.7)
    flying = rng.random() < 0.4
    pen.polygon([(0.28, 0.54), (0.06, 0.42 + rng.uniform(-0.05, 0.05)), (0.1, 0.66)], wing)
    if not flying:
        for x in (0.45, 0.53):
            pen.line([(x, 0.66), (x, 0.82), (x + 0.04, 0.84)], (200, 140, 60), 0.012)
    pen.ellipse(0.48, 0.56, 0.25 * rng.uniform(0.9, 1.1), 0.15, colour)
    pen.ellipse(0.52, 0.62, 0.15, 0.07, _shade(colour, 1.5), outline=False)
    pen.circle(0.72, 0.42, 0.11, colour)
    pen.polygon([(0.81, 0.39), (0.95, 0.43), (0.81, 0.47)], (245, 170, 40))
    pen.circle(0.75, 0.4, 0.02, BLACK, outline=False)
    if flying:
        pen.polygon([(0.38, 0.52), (0.5 + rng.uniform(-0.05, 0.05), 0.12), (0.62, 0.5)], wing)
    else:
        pen.oval(0.45, 0.55, 0.16, 0.07, rng.uniform(-15, 5), wing)


def draw_penguin(pen: Pen, rng: np.random.Generator) -> None:
    """A standing penguin: dark back, white belly, orange beak and feet, flippers."""
    back = _pick(rng, [BLACK, (45, 55, 75), (60, 60, 65)], jitter=10)
    orange = _pick(rng, [(245, 150, 40), (240, 190, 50)], jitter=10)
    flap = rng.uniform(10, 45)
    for side in (-1, 1):
        pen.ellipse(0.5 + side * 0.07, 0.88, 0.07, 0.03, orange)
        pen.oval(0.5 + side * 0.2, 0.56, 0.05, 0.17, -side * flap, back)
    pen.ellipse(0.5, 0.55, 0.2 * rng.uniform(0.9, 1.1), 0.33, back)
    pen.ellipse(0.5, 0.6, 0.14, 0.25, WHITE, outline=False)
    for side in (-1, 1):
        pen.circle(0.5 + side * 0.06, 0.33, 0.025, WHITE, outline=False)
        pen.circle(0.5 + side * 0.06, 0.33, 0.012, BLACK, outline=False)
    pen.polygon([(0.46, 0.38), (0.54, 0.38), (0.5, 0.45)], orange)


def draw_plane(pen: Pen, rng: np.random.Generator) -> None:
    """An airliner side-on: long fuselage, swept wings, tail fin and a row of windows."""
    body = _pick(rng, [(240, 240, 245), (195, 200, 210)], jitter=10)
    accent = _pick(rng, [(30, 80, 170), (200, 40, 40)])
    sweep = rng.uniform(0.0, 0.1)
    pen.polygon([(0.44, 0.46), (0.34 - sweep, 0.14), (0.45 - sweep, 0.14), (0.64, 0.46)], _shade(body, 0.8))
    pen.polygon([(0.12, 0.48), (0.05, 0.2), (0.16, 0.2), (0.3, 0.48)], accent)
    pen.ellipse(0.5, 0.5, 0.42 * rng.uniform(0.92, 1.05), 0.1, body)
    pen.line([(0.14, 0.55), (0.88, 0.55)], accent, 0.022)
    for x in np.arange(0.3, 0.76, 0.06):
        pen.circle(float(x), 0.47, 0.017, (90, 150, 210), outline=False)
    pen.ellipse(0.85, 0.47, 0.035, 0.022, (60, 110, 170), outline=False)
    pen.polygon([(0.44, 0.54), (0.3 - sweep, 0.88), (0.41 - sweep, 0.88), (0.64, 0.54)], body)
    pen.ellipse(0.42 - sweep / 2, 0.7, 0.07, 0.032, _shade(body, 0.6))


def draw_car(pen: Pen, rng: np.random.Generator) -> None:
    """A side-on car: body, cabin with two windows, two wheels and a headlight."""
    paint = _pick(rng, [(210, 40, 40), (240, 195, 40)], weights=(0.65, 0.35))
    roof = rng.uniform(0.26, 0.36)
    pen.polygon([(0.26, 0.52), (0.35, roof), (0.67, roof), (0.78, 0.52)], paint)
    glass = (170, 210, 235)
    pen.polygon([(0.31, 0.5), (0.37, roof + 0.03), (0.5, roof + 0.03), (0.5, 0.5)], glass)
    pen.polygon([(0.53, 0.5), (0.53, roof + 0.03), (0.65, roof + 0.03), (0.73, 0.5)], glass)
    pen.rect(0.1, 0.5, 0.9, 0.72, paint, radius=0.05)
    pen.ellipse(0.87, 0.57, 0.025, 0.02, (255, 240, 150))
    for x in (0.29, 0.71):
        pen.circle(x, 0.72, 0.095, BLACK)
        pen.circle(x, 0.72, 0.04, (180, 180, 185))


def draw_flower(pen: Pen, rng: np.random.Generator) -> None:
    """A flower: stem and leaves, 5 to 9 petals round a centre."""
    green = _pick(rng, [(60, 150, 60), (90, 170, 70)])
    petal = _pick(rng, [(240, 90, 150), (200, 50, 170), (150, 80, 200), (250, 250, 245)],
                  weights=(0.35, 0.3, 0.25, 0.1))
    pen.line([(0.5, 0.45), (0.5 + rng.uniform(-0.05, 0.05), 0.98)], green, 0.03)
    pen.oval(0.4, 0.78, 0.1, 0.04, -30, green)
    if rng.random() < 0.6:
        pen.oval(0.6, 0.7, 0.1, 0.04, 30, green)
    count = int(rng.integers(5, 10))
    reach, start = rng.uniform(0.17, 0.22), rng.uniform(0, 360)
    for k in range(count):
        a = start + 360 * k / count
        cx = 0.5 + reach * math.cos(math.radians(a))
        cy = 0.38 + reach * math.sin(math.radians(a))
        pen.oval(cx, cy, reach * 0.75, 0.07, a, petal)
    pen.circle(0.5, 0.38, 0.08, _pick(rng, [(250, 200, 40)]))


def draw_tree(pen: Pen, rng: np.random.Generator) -> None:
    """A tree: trunk plus round foliage (green or autumn, sometimes with fruit) or a conifer."""
    bark = _pick(rng, [(120, 80, 45), (95, 65, 40)])
    pen.rect(0.45, 0.55, 0.55, 0.96, bark)
    if rng.random() < 0.35:
        green = _pick(rng, [(30, 110, 60), (50, 130, 70)])
        for k, y in enumerate((0.62, 0.46, 0.3)):
            half = 0.32 - 0.07 * k
            pen.polygon([(0.5 - half, y), (0.5 + half, y), (0.5, y - 0.26)], green)
        return
    leaves = _pick(rng, [(70, 160, 60), (40, 130, 50), (90, 180, 70), (230, 140, 40)],
                   weights=(0.3, 0.3, 0.25, 0.15))
    for _ in range(int(rng.integers(5, 8))):
        pen.circle(0.5 + rng.uniform(-0.17, 0.17), 0.38 + rng.uniform(-0.14, 0.12),
                   rng.uniform(0.12, 0.17), leaves)
    if rng.random() < 0.3:
        for _ in range(5):
            pen.circle(0.5 + rng.uniform(-0.2, 0.2), 0.38 + rng.uniform(-0.15, 0.12), 0.025,
                       (220, 30, 30))


DRAWERS: dict[str, Callable[[Pen, np.random.Generator], None]] = {
    "bird": draw_bird, "car": draw_car, "cat": draw_cat, "dog": draw_dog, "flower": draw_flower,
    "panda": draw_panda, "penguin": draw_penguin, "plane": draw_plane, "tiger": draw_tiger,
    "tree": draw_tree,
}
CLASSES: tuple[str, ...] = tuple(sorted(DRAWERS))


# --- backgrounds and composition ------------------------------------------------------------------

OBJECT_SPAN = (0.72, 0.92)   # the drawing's longer side, as a fraction of the picture
PLACE_JITTER = 0.05          # centre offset, as a fraction of the picture
ROTATION = 12.0              # degrees either way
CLUTTER_SHARE = 0.15         # backgrounds with a few faint shapes on them
BLUR_SHARE = 0.1             # slightly out-of-focus pictures


def _pastel(rng: np.random.Generator) -> RGB:
    """A light, weakly saturated colour: backgrounds tint the picture without competing with it."""
    rgb = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.03, 0.18), rng.uniform(0.75, 0.97))
    return _rgb(np.array(rgb) * 255)


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A pale solid, gradient or softly mottled background, sometimes with faint clutter shapes."""
    kind = rng.choice(["solid", "gradient", "mottled"], p=[0.4, 0.35, 0.25])
    if kind == "solid":
        image = Image.new("RGB", (size, size), _pastel(rng))
    elif kind == "gradient":
        a, b = np.array(_pastel(rng)), np.array(_pastel(rng))
        ramp = np.linspace(0.0, 1.0, size)[:, None, None]
        pixels = np.broadcast_to(a + (b - a) * ramp, (size, size, 3))
        if rng.random() < 0.5:
            pixels = pixels.transpose(1, 0, 2)
        image = Image.fromarray(np.ascontiguousarray(pixels).astype(np.uint8))
    else:
        grid = np.clip(np.array(_pastel(rng)) + rng.integers(-25, 26, size=(4, 4, 3)), 0, 255)
        smooth = np.asarray(Image.fromarray(grid.astype(np.uint8)).resize(
            (size, size), Image.Resampling.BICUBIC), float)
        grain = rng.normal(0.0, 5.0, size=(size, size, 3))
        image = Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8))
    if rng.random() < CLUTTER_SHARE:
        _clutter(ImageDraw.Draw(image), rng, size)
    return image


def _clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    """Two to four pale ellipses, boxes and lines behind the object."""
    for _ in range(int(rng.integers(2, 5))):
        x0, y0 = rng.uniform(-0.1, 0.9, size=2) * size
        w, h = rng.uniform(0.05, 0.25, size=2) * size
        colour = _pastel(rng)
        shape = rng.integers(3)
        if shape == 0:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
        elif shape == 1:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=colour)
        else:
            draw.line([x0, y0, x0 + w, y0 + h], fill=colour, width=max(1, size // 60))


def _object_layer(cls: str, rng: np.random.Generator, size: int) -> Image.Image:
    """The class drawing on a transparent full-size layer: flipped, slightly rotated, cropped to
    its outline, scaled to fill most of the picture and placed near the centre."""
    side = size * SUPERSAMPLE
    layer = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    DRAWERS[cls](Pen(layer), rng)
    if rng.random() < 0.5:
        layer = layer.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    layer = layer.rotate(rng.uniform(-ROTATION, ROTATION), resample=Image.Resampling.BICUBIC,
                         expand=True)
    layer = layer.crop(layer.getchannel("A").getbbox())
    scale = size * rng.uniform(*OBJECT_SPAN) / max(layer.size)
    w, h = (max(1, round(v * scale)) for v in layer.size)
    layer = layer.resize((w, h), Image.Resampling.LANCZOS)
    x, y = (round((size - d) / 2 + rng.uniform(-PLACE_JITTER, PLACE_JITTER) * size) for d in (w, h))
    placed = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    placed.paste(layer, (min(max(x, 0), size - w), min(max(y, 0), size - h)))
    return placed


def draw_image(cls: str, rng: np.random.Generator, size: int, transparent: bool = False) -> Image.Image:
    """One finished picture of `cls`: RGB on a background, or RGBA on transparency."""
    obj = _object_layer(cls, rng, size)
    if transparent:
        return obj
    canvas = _background(rng, size).convert("RGBA")
    canvas.alpha_composite(obj)
    image = canvas.convert("RGB")
    if rng.random() < BLUR_SHARE:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    return image


# --- file formats and defects ---------------------------------------------------------------------

def _format_plan(n: int, rng: np.random.Generator) -> list[str]:
    """A shuffled list of `n` storage kinds: rgba, gray, palette, jpeg, png."""
    n_rgba = round(RGBA_SHARE * n)
    n_gray = max(1, round(GRAY_SHARE * n)) if n >= 5 else 0
    n_palette = max(1, round(PALETTE_SHARE * n)) if n >= 5 else 0
    n_rgb = max(0, n - n_rgba - n_gray - n_palette)
    rgb = ["jpeg" if rng.random() < JPEG_SHARE else "png" for _ in range(n_rgb)]
    plan = ["rgba"] * n_rgba + ["gray"] * n_gray + ["palette"] * n_palette + rgb
    return [plan[i] for i in rng.permutation(len(plan))][:n]


def _encode(image: Image.Image, kind: str, rng: np.random.Generator) -> tuple[bytes, str, str]:
    """(file bytes, extension, PIL mode) of one image stored as `kind`."""
    buf = io.BytesIO()
    quality = int(rng.integers(70, 96))
    if kind == "rgba":
        image.save(buf, "PNG")
    elif kind == "gray":
        image = image.convert("L")
        ext = ".png" if rng.random() < 0.5 else ".jpg"
        image.save(buf, "PNG" if ext == ".png" else "JPEG", quality=quality)
        return buf.getvalue(), ext, "L"
    elif kind == "palette":
        image = image.quantize(colors=int(rng.integers(16, 129)))
        image.save(buf, "PNG")
    elif kind == "cmyk":
        image = image.convert("CMYK")
        image.save(buf, "JPEG", quality=quality)
    elif kind == "jpeg":
        image.save(buf, "JPEG", quality=quality)
    else:
        image.save(buf, "PNG")
    return buf.getvalue(), ".png" if kind in ("rgba", "palette", "png") else ".jpg", image.mode


def _plans(per_class: int, seed: int) -> dict[str, list[str]]:
    """The storage kind of every good picture, per class, with CMYK_IMAGES RGB slots made CMYK."""
    plans = {cls: _format_plan(per_class, np.random.default_rng([seed, ci, 0xF0]))
             for ci, cls in enumerate(CLASSES)}
    rgb_slots = [(cls, i) for cls, plan in plans.items() for i, kind in enumerate(plan)
                 if kind in ("jpeg", "png")]
    rng = np.random.default_rng([seed, 0xC3])
    for j in rng.choice(len(rgb_slots), min(CMYK_IMAGES, len(rgb_slots)), replace=False):
        cls, i = rgb_slots[j]
        plans[cls][i] = "cmyk"
    return plans


def _good_images(dest: Path, plans: dict[str, list[str]], image_size: int, seed: int
                 ) -> tuple[dict[str, list[Path]], dict[str, int]]:
    """Draw and save every planned picture; returns the paths per class and the count per mode."""
    written: dict[str, list[Path]] = {}
    modes: Counter[str] = Counter()
    with tqdm(total=sum(map(len, plans.values())), desc="synthetic", unit="img") as bar:
        for ci, cls in enumerate(CLASSES):
            folder = dest / cls
            folder.mkdir(parents=True, exist_ok=True)
            written[cls] = []
            for i, kind in enumerate(plans[cls]):
                rng = np.random.default_rng([seed, ci, i])
                image = draw_image(cls, rng, image_size, transparent=kind == "rgba")
                data, ext, mode = _encode(image, kind, rng)
                path = folder / f"{cls}_{i:04d}{ext}"
                path.write_bytes(data)
                written[cls].append(path)
                modes[mode] += 1
                bar.update()
    return written, dict(sorted(modes.items()))


def _add_defects(dest: Path, written: dict[str, list[Path]], image_size: int, seed: int) -> dict[str, int]:
    """Add the scraping debris: truncated files, non-images, duplicates and one thumbnail."""
    rng = np.random.default_rng([seed, 0xDEB])
    classes = list(CLASSES)
    for k in range(CORRUPT_FILES):
        cls = classes[rng.integers(len(classes))]
        image = draw_image(cls, rng, image_size)
        data, ext, _ = _encode(image, "jpeg" if k % 2 == 0 else "png", rng)
        cut = int(len(data) * rng.uniform(0.3, 0.6))
        (dest / cls / f"{cls}_{len(written[cls]) + k:04d}{ext}").write_bytes(data[:cut])
    html_cls, notes_cls, tiny_cls = (classes[i] for i in rng.choice(len(classes), 3, replace=False))
    (dest / html_cls / "image_download.jpg").write_bytes(NOT_IMAGE_TEXT)
    (dest / notes_cls / "notes.txt").write_bytes(NOTES_TEXT)
    for _ in range(DUPLICATES):
        cls = classes[rng.integers(len(classes))]
        original = written[cls][rng.integers(len(written[cls]))]
        copy = original.with_name(f"{original.stem} (1){original.suffix}")
        if copy.exists():
            copy = original.with_name(f"{original.stem} (2){original.suffix}")
        copy.write_bytes(original.read_bytes())
    tiny = draw_image(tiny_cls, rng, image_size).resize((TINY_SIDE, TINY_SIDE), Image.Resampling.LANCZOS)
    tiny.save(dest / tiny_cls / f"{tiny_cls}_thumb.png", "PNG")
    return {"corrupt": CORRUPT_FILES, "not_image": 2, "duplicate": DUPLICATES, "tiny": 1}


def generate(dest: Path, per_class: int, image_size: int, seed: int) -> dict:
    """Write the cartoon dataset into `dest/<class>/`; returns a summary of what was written.

    `per_class` counts the good drawings of each class; the defects (see the module docstring)
    come on top. The same arguments give byte-identical files.
    """
    if per_class < 1 or image_size < TINY_SIDE * 2:
        raise ValueError(f"per_class must be >= 1 and image_size >= {TINY_SIDE * 2}, "
                         f"got {per_class} and {image_size}")
    dest = Path(dest)
    written, modes = _good_images(dest, _plans(per_class, seed), image_size, seed)
    defects = _add_defects(dest, written, image_size, seed)
    counts = {cls: sum(1 for _ in (dest / cls).iterdir()) for cls in CLASSES}
    summary = {"classes": list(CLASSES), "per_class": per_class, "image_size": image_size,
               "files": sum(counts.values()), "counts": counts, "modes": modes, "defects": defects}
    log.info("synthetic: %d good drawings + %d defect files in %d classes (modes %s)",
             per_class * len(CLASSES), summary["files"] - per_class * len(CLASSES), len(CLASSES), modes)
    return summary

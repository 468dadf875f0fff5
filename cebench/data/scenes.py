"""Procedural scenes for the built-in dataset: textured backgrounds and occluding shaped objects.

    import numpy as np
    from cebench.data.scenes import CLASSES, render_scene
    scene = render_scene(np.random.default_rng(0), size=64, n_objects=3)
    scene.image          # uint8[64,64,3]
    scene.instances      # int16[64,64], -1 = background, k = scene.objects[k]
    scene.objects[0]     # SceneObject(label=1..6, box=(x1,y1,x2,y2) 0-based, area, difficult, ...)

Why it looks the way it does: inpainting must be a real task and no label may be readable from
colour alone, so (a) backgrounds are smooth gradients, sinusoidal gratings and 1/f^beta ("pink",
photo-like) noise mixed together, (b) the six classes differ only in SHAPE, (c) colour, texture,
scale, aspect, rotation and position are drawn independently of the class, and (d) objects occlude
each other in drawing order. Everything is a function of the numpy Generator passed in, so a scene
is fixed by its seed. Shapes are rasterised with 2x2 supersampling: the soft coverage is used
to composite colours (natural edges), coverage >= 1/2 defines the object's pixels (hard labels).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

CLASSES = ("disc", "square", "triangle", "star", "ring", "cross")
_SUPERSAMPLE = 2


def _regular_star(points: int, inner: float) -> np.ndarray:
    angles = np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


_ARM = 0.32  # half width of the cross's arms
# unit-size outlines (object frame, extent about 1); disc and ring are analytic
_POLYGONS = {
    "square": np.array([[-0.82, -0.82], [0.82, -0.82], [0.82, 0.82], [-0.82, 0.82]]),
    "triangle": np.array([[np.cos(a), np.sin(a)] for a in np.pi / 2 + np.arange(3) * 2 * np.pi / 3]) * 1.1,
    "star": _regular_star(5, 0.45) * 1.1,
    "cross": np.array([[_ARM, 1], [-_ARM, 1], [-_ARM, _ARM], [-1, _ARM], [-1, -_ARM], [-_ARM, -_ARM],
                       [-_ARM, -1], [_ARM, -1], [_ARM, -_ARM], [1, -_ARM], [1, _ARM], [_ARM, _ARM]]),
}  # fmt: skip


def _inside_polygon(u: np.ndarray, v: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule, vectorised over points, looping over the (few) edges."""
    inside = np.zeros(u.shape, dtype=bool)
    xj, yj = poly[-1]
    for xi, yi in poly:
        crosses = (yi > v) != (yj > v)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = (xj - xi) * (v - yi) / (yj - yi) + xi
        inside ^= crosses & (u < x_at)
        xj, yj = xi, yi
    return inside


def _coverage_window(
    cls: str, size: int, cx: float, cy: float, radius: float, aspect: float, angle: float
) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Coverage on the window of the image the shape can reach, and that window's slices."""
    # outlines have extent <= 1.1 in the object frame
    reach = 1.15 * radius * max(aspect, 1 / aspect)
    x0, x1 = max(int(cx - reach), 0), min(int(np.ceil(cx + reach)) + 1, size)
    y0, y1 = max(int(cy - reach), 0), min(int(np.ceil(cy + reach)) + 1, size)
    window = (slice(y0, max(y1, y0)), slice(x0, max(x1, x0)))
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0)), window
    tx = (np.arange(x0 * _SUPERSAMPLE, x1 * _SUPERSAMPLE) + 0.5) / _SUPERSAMPLE  # in pixels
    ty = (np.arange(y0 * _SUPERSAMPLE, y1 * _SUPERSAMPLE) + 0.5) / _SUPERSAMPLE
    x, y = np.meshgrid(tx - cx, ty - cy)
    c, s = np.cos(angle), np.sin(angle)
    u = (c * x + s * y) / (radius * aspect)
    v = (-s * x + c * y) / (radius / aspect)
    if cls == "disc":
        hit = u * u + v * v <= 1.0
    elif cls == "ring":
        rr = u * u + v * v
        hit = (rr <= 1.0) & (rr >= 0.5**2)
    else:
        hit = _inside_polygon(u, -v, _POLYGONS[cls])  # -v: image y points down, keep shapes upright
    h, w = y1 - y0, x1 - x0
    return hit.reshape(h, _SUPERSAMPLE, w, _SUPERSAMPLE).mean(axis=(1, 3)), window


def shape_coverage(
    cls: str, size: int, cx: float, cy: float, radius: float, aspect: float, angle: float
) -> np.ndarray:
    """Fraction (0..1) of each pixel of a size x size image covered by the shape."""
    out = np.zeros((size, size))
    cover, window = _coverage_window(cls, size, cx, cy, radius, aspect, angle)
    out[window] = cover
    return out


def _random_colour(rng: np.random.Generator, sat: tuple[float, float] = (0.15, 1.0)) -> np.ndarray:
    """A colour from HSV drawn uniformly in hue: the same distribution for every class."""
    h, s, v = rng.uniform(0, 1), rng.uniform(*sat), rng.uniform(0.2, 1.0)
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    return v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)


@functools.lru_cache(maxsize=64)
def _log_frequency(h: int, w: int) -> np.ndarray:
    """log |f| on the rfft2 grid (DC set to 0; its amplitude is zeroed anyway)."""
    f = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.rfftfreq(w)[None, :] ** 2)
    f[0, 0] = 1.0
    return np.log(f)


def pink_noise(rng: np.random.Generator, shape: int | tuple[int, int], beta: float) -> np.ndarray:
    """1/f^beta noise scaled to 0..1: natural-image-like amplitude spectrum (beta ~ 2)."""
    h, w = (shape, shape) if isinstance(shape, int) else shape
    amplitude = np.exp(-0.5 * beta * _log_frequency(h, w))
    amplitude[0, 0] = 0.0
    spectrum = rng.standard_normal(amplitude.shape) + 1j * rng.standard_normal(amplitude.shape)
    field = np.fft.irfft2(spectrum * amplitude, s=(h, w))
    # +-2.5 std covers ~99% of this Gaussian field; cheaper than percentiles
    return np.clip(0.5 + field / (5 * max(float(field.std()), 1e-12)), 0, 1)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates scaled by the larger side, so patterns keep their scale in any window."""
    n = max(h, w, 2) - 1
    return np.arange(h)[:, None] / n, np.arange(w)[None, :] / n


def _grating(rng: np.random.Generator, h: int, w: int, cycles: tuple[float, float]) -> np.ndarray:
    y, x = _grid(h, w)
    lo, hi = cycles[0], max(cycles)  # a tiny (clipped) window may ask for hi < lo
    a, freq, phase = rng.uniform(0, np.pi), rng.uniform(lo, hi), rng.uniform(0, 2 * np.pi)
    return 0.5 + 0.5 * np.sin(2 * np.pi * freq * (np.cos(a) * x + np.sin(a) * y) + phase)


def _gradient(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    y, x = _grid(h, w)
    a = rng.uniform(0, 2 * np.pi)
    g = np.cos(a) * x + np.sin(a) * y
    return (g - g.min()) / max(g.max() - g.min(), 1e-8)


def _texture(rng: np.random.Generator, h: int, w: int, kind: str) -> np.ndarray:
    """A 0..1 pattern used to mix two colours."""
    if kind == "gradient":
        return _gradient(rng, h, w)
    if kind == "stripes":
        return _grating(rng, h, w, (1.5, max(h, w) / 4))
    if kind == "noise":
        return pink_noise(rng, (h, w), rng.uniform(1.2, 2.8))
    return np.zeros((h, w))  # "flat"


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """float[size,size,3] in 0..1: a gradient between two colours, plus pink noise, plus sometimes a grating."""
    c1, c2 = _random_colour(rng, (0.0, 0.8)), _random_colour(rng, (0.0, 0.8))
    base = _gradient(rng, size, size)[..., None]
    img = c1 * (1 - base) + c2 * base
    c3 = _random_colour(rng, (0.0, 0.9))
    noise = pink_noise(rng, size, rng.uniform(1.5, 2.6))[..., None]
    img = img * (1 - 0.6 * noise) + c3 * 0.6 * noise
    if rng.uniform() < 0.35:
        grating = _grating(rng, size, size, (2, size / 5))[..., None]
        img = img * (1 - 0.25 * grating) + _random_colour(rng) * 0.25 * grating
    return img


def object_appearance(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """float[h,w,3]: the object's surface (two random colours mixed by a random texture)."""
    kind = rng.choice(["flat", "gradient", "stripes", "noise"])
    c1, c2 = _random_colour(rng), _random_colour(rng)
    mix = _texture(rng, h, w, kind)[..., None] * rng.uniform(0.3, 1.0)
    shade = 1 + 0.15 * (
        pink_noise(rng, (h, w), 2.0)[..., None] - 0.5
    )  # mild shading on every object
    return (c1 * (1 - mix) + c2 * mix) * shade


@dataclass
class SceneObject:
    label: int  # 1..len(CLASSES)
    box: tuple[int, int, int, int]  # tight around the visible pixels, 0-based xyxy, x2/y2 exclusive
    area: int  # visible pixels
    difficult: bool  # heavily occluded or tiny
    truncated: bool  # touches the image border

    @property
    def name(self) -> str:
        return CLASSES[self.label - 1]


@dataclass
class Scene:
    image: np.ndarray  # uint8[H,W,3]
    instances: np.ndarray  # int16[H,W]: index into objects, -1 = background
    objects: list[SceneObject]

    def class_mask(self) -> np.ndarray:
        """uint8[H,W]: 0 background, 1..C class of the front-most object (no ignore border)."""
        labels = np.array([0] + [o.label for o in self.objects], dtype=np.uint8)
        return labels[self.instances + 1]

    def voc_mask(self, border: int = 1) -> np.ndarray:
        """class_mask with a 255 band `border` px on each side of every region boundary, as VOC."""
        mask = self.class_mask()
        inst = self.instances
        edge = np.zeros(inst.shape, dtype=bool)
        pad = np.pad(inst, border, mode="edge")
        h, w = inst.shape
        for dy in range(-border, border + 1):
            for dx in range(-border, border + 1):
                edge |= pad[border + dy : border + dy + h, border + dx : border + dx + w] != inst
        mask[edge] = 255
        return mask


def render_scene(
    rng: np.random.Generator,
    size: int,
    n_objects: int,
    labels: list[int] | None = None,
    radius: tuple[float, float] = (0.09, 0.28),
    dominant: bool = False,
    poses: list[tuple[float, float, float, float, float]] | None = None,
) -> Scene:
    """Draw a background and `n_objects` shapes back to front.

    labels: the class (1..C) of each object, else uniform. dominant: the last object is large and
    central (radius 0.28-0.40 of the side) and the others small (ImageFolder images).
    poses: (cx, cy, radius, aspect, angle) in pixels/radians per object instead of random ones.
    Objects left with no visible pixel are dropped from `objects` (they cannot be seen).
    """
    img = background(rng, size)
    instances = np.full((size, size), -1, dtype=np.int16)
    full_areas = []
    if labels is None:
        labels = [int(rng.integers(1, len(CLASSES) + 1)) for _ in range(n_objects)]
    for k, label in enumerate(labels):
        if poses is None:
            big = dominant and k == len(labels) - 1
            r = size * (rng.uniform(0.28, 0.40) if big else rng.uniform(*radius))
            lo, hi = (0.38, 0.62) if big else (0.08, 0.92)
            cx, cy = size * rng.uniform(lo, hi), size * rng.uniform(lo, hi)
            aspect, angle = rng.uniform(0.8, 1.25), rng.uniform(0, 2 * np.pi)
        else:
            cx, cy, r, aspect, angle = poses[k]
        cover, win = _coverage_window(CLASSES[label - 1], size, cx, cy, r, aspect, angle)
        if cover.size:
            alpha = cover[..., None]
            img[win] = img[win] * (1 - alpha) + object_appearance(rng, *cover.shape) * alpha
        solid = cover >= 0.5
        instances[win][solid] = k
        full_areas.append(int(solid.sum()))
    return _finish_scene(rng, img, instances, labels, full_areas)


def _finish_scene(
    rng: np.random.Generator,
    img: np.ndarray,
    instances: np.ndarray,
    labels: list[int],
    full_areas: list[int],
) -> Scene:
    """Sensor noise, uint8 image, and the visible objects (boxes, difficult, truncated flags)."""
    size = img.shape[0]
    img = img + rng.normal(0, 0.012, img.shape)  # faint sensor noise: no perfectly flat regions
    image = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)

    objects: list[SceneObject] = []
    remap = np.full(len(labels) + 1, -1, dtype=np.int16)
    tiny = max(6, int(0.006 * size * size))
    for k, label in enumerate(labels):
        visible = instances == k
        area = int(visible.sum())
        if area == 0:
            continue
        ys, xs = np.nonzero(visible)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        occluded = area < 0.4 * full_areas[k]
        truncated = bool(
            visible[0].any() or visible[-1].any() or visible[:, 0].any() or visible[:, -1].any()
        )
        remap[k + 1] = len(objects)
        objects.append(SceneObject(label, box, area, bool(occluded or area < tiny), truncated))
    return Scene(image=image, instances=remap[instances + 1], objects=objects)


def leaf_radius(rng: np.random.Generator, lo: float, hi: float, alpha: float) -> float:
    """A radius from the dead-leaves size law p(r) ~ r^-alpha on [lo, hi] (inverse CDF)."""
    a = 1.0 - alpha
    u = rng.uniform()
    if abs(a) < 1e-9:
        return float(lo * (hi / lo) ** u)
    return float((lo**a + u * (hi**a - lo**a)) ** (1.0 / a))


def render_dead_leaves(
    rng: np.random.Generator,
    size: int,
    radius: tuple[float, float] = (0.12, 0.5),
    alpha: float = 2.5,
    max_leaves: int = 96,
    cover: float = 0.99,
) -> Scene:
    """A dead-leaves scene: textured shapes of the six classes stacked until the image is covered.

    The occlusion model of natural images (Lee, Mumford & Huang, IJCV 2001) used to pretrain
    without photographs by Baradad et al., "Learning to see by looking at noise" (NeurIPS 2021):
    leaves with radii drawn from p(r) ~ r^-alpha on `radius` (fractions of the side; alpha = 3
    is scale invariant, 2.5 and a 0.12 floor keep leaves large enough to show their shape at 48 px), random pose, colour and texture (`object_appearance`), fall on the
    image front to back (each new leaf lies behind the earlier ones) until a fraction `cover` of
    the pixels is covered or `max_leaves` have fallen; the rest shows a `background`. Every edge
    is an occlusion boundary between two textured surfaces, so filling a hole means continuing
    shapes and textures, not just a smooth background. Objects are listed back to front.
    """
    acc = np.zeros((size, size, 1))  # coverage so far (front leaves)
    img = np.zeros((size, size, 3))
    front = np.full((size, size), -1, dtype=np.int16)
    labels: list[int] = []  # front to back
    full_areas: list[int] = []
    for _ in range(max_leaves):
        label = int(rng.integers(1, len(CLASSES) + 1))
        r = size * leaf_radius(rng, radius[0], radius[1], alpha)
        cx, cy = size * rng.uniform(-0.05, 1.05), size * rng.uniform(-0.05, 1.05)
        aspect, angle = rng.uniform(0.8, 1.25), rng.uniform(0, 2 * np.pi)
        cov, win = _coverage_window(CLASSES[label - 1], size, cx, cy, r, aspect, angle)
        if not cov.size:
            continue
        alpha_px = cov[..., None] * (1 - acc[win])
        img[win] += alpha_px * object_appearance(rng, *cov.shape)
        acc[win] += alpha_px
        front[win][(cov >= 0.5) & (front[win] < 0)] = len(labels)
        labels.append(label)
        full_areas.append(int((cov >= 0.5).sum()))
        if acc.mean() >= cover:
            break
    img += (1 - acc) * background(rng, size)
    # objects back to front, as in render_scene: leaf k from the front is object n - 1 - k
    n = len(labels)
    instances = np.where(front >= 0, n - 1 - front, -1).astype(np.int16)
    return _finish_scene(rng, img, instances, labels[::-1], full_areas[::-1])

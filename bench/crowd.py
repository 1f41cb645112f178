"""Build a crowd test set: many faces 10-30 px high on street and AFW backgrounds.

    python -m bench.crowd OUT_DIR [--afw DIR] [--media DIR] [--images 30] [--seed 0]

Writes OUT_DIR/annotations.json and OUT_DIR/images/*.jpg in the format of
`docs/privacy.md`, then `anonymizer eval OUT_DIR` measures the service on it.

Each image is a background (an AFW photo or a street photo of `media/`, scaled to 1024 px wide and
blurred so its own faces are no longer faces to a detector; AFW's annotated faces in it are
marked `ignore` all the same) with rows of AFW faces pasted on it, back to front: faces higher up
are smaller (10 px) than those lower down (30 px), as in a photo of a crowd or a stand. Each face
is pasted with its head, hair and some shoulders around it (2x the box), faded out at the edges,
so the detector sees a face in context rather than a sticker; a nearer face never covers the box
of one behind it. Faces are flipped at random, blurred a little, lit brighter or darker,
and JPEG-compressed (quality 80) with the image. Everything is
seeded, so a seed gives the same set on every machine.
"""

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED = PROJECT_ROOT.parent / "shared" / "data"
WIDTH = 1024
HEIGHTS = (683, 768)
FACE_HEIGHTS = (10.0, 30.0)
CONTEXT = 2.0
STREET = ("deface_city.jpg", "egoblur_gen1_test_image.jpg")


@dataclass(frozen=True)
class Face:
    """An AFW face: the photo and its box (x1, y1, x2, y2)."""

    image: Path
    box: tuple[float, float, float, float]


def load_rgb(path: Path) -> np.ndarray:
    """RGB uint8 (H, W, 3), EXIF orientation applied."""
    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def afw_faces(afw: Path) -> tuple[list[Face], dict[Path, list[tuple[float, ...]]]]:
    """Every counted AFW face, and every annotated box per photo (for the backgrounds' ignore boxes)."""
    annotations = json.loads((afw / "annotations.json").read_text())
    faces, boxes = [], {}
    for entry in annotations["images"]:
        path = afw / entry["file"]
        rows = [(b["x1"], b["y1"], b["x2"], b["y2"]) for b in entry["boxes"]]
        boxes[path] = rows
        faces.extend(Face(path, row) for row, b in zip(rows, entry["boxes"], strict=True) if not b.get("ignore"))
    return faces, boxes


def background(path: Path, height: int, rng: np.random.Generator, known: list[tuple[float, ...]]):
    """A blurred WIDTH x height crop of the photo at `path`, and its known faces mapped into it."""
    photo = load_rgb(path)
    scale = max(WIDTH / photo.shape[1], height / photo.shape[0])
    resized = cv2.resize(photo, (int(np.ceil(photo.shape[1] * scale)), int(np.ceil(photo.shape[0] * scale))))
    left = int(rng.integers(0, resized.shape[1] - WIDTH + 1))
    top = int(rng.integers(0, resized.shape[0] - height + 1))
    canvas = cv2.GaussianBlur(resized[top : top + height, left : left + WIDTH], (0, 0), 5.0)
    ignored = []
    for x1, y1, x2, y2 in known:
        box = (x1 * scale - left, y1 * scale - top, x2 * scale - left, y2 * scale - top)
        clipped = (max(box[0], 0), max(box[1], 0), min(box[2], WIDTH), min(box[3], height))
        if clipped[2] - clipped[0] > 2 and clipped[3] - clipped[1] > 2:
            ignored.append(clipped)
    return canvas, ignored


def face_patch(face: Face, photo: np.ndarray, height: float, flip: bool, rng: np.random.Generator):
    """The face with its context, scaled so the face box is `height` px high: RGB patch, alpha, box in it.

    Downscaling a sharp photo gives crisper faces than a camera takes of a far crowd: the patch gets
    some optical blur (0.3-1.0 px) and an exposure change (gain 0.6-1.3) as well."""
    x1, y1, x2, y2 = face.box
    centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2
    half_w, half_h = (x2 - x1) * CONTEXT / 2, (y2 - y1) * CONTEXT / 2
    cx1, cy1 = int(max(0, centre_x - half_w)), int(max(0, centre_y - half_h))
    cx2, cy2 = int(min(photo.shape[1], centre_x + half_w)), int(min(photo.shape[0], centre_y + half_h))
    scale = height / (y2 - y1)
    size = (max(1, round((cx2 - cx1) * scale)), max(1, round((cy2 - cy1) * scale)))
    patch = cv2.resize(photo[cy1:cy2, cx1:cx2], size, interpolation=cv2.INTER_AREA)
    patch = cv2.GaussianBlur(patch, (0, 0), rng.uniform(0.3, 1.0))
    patch = np.clip(patch.astype(np.float32) * rng.uniform(0.6, 1.3), 0, 255).astype(np.uint8)
    box = [(x1 - cx1) * scale, (y1 - cy1) * scale, (x2 - cx1) * scale, (y2 - cy1) * scale]
    # Opaque over the face and fading to nothing at the patch's edge, so no sticker outline shows.
    ys, xs = np.mgrid[0 : size[1], 0 : size[0]]
    fx = (xs + 0.5 - ((box[0] + box[2]) / 2)) / max((box[2] - box[0]) * CONTEXT / 2, 1)
    fy = (ys + 0.5 - ((box[1] + box[3]) / 2)) / max((box[3] - box[1]) * CONTEXT / 2, 1)
    alpha = np.clip((1.0 - np.hypot(fx, fy)) / 0.35, 0.0, 1.0).astype(np.float32)
    if flip:
        patch, alpha = patch[:, ::-1], alpha[:, ::-1]
        box = [size[0] - box[2], box[1], size[0] - box[0], box[3]]
    return patch, alpha, box


def crowd_image(canvas: np.ndarray, faces: list[Face], photos: dict, rng: np.random.Generator) -> list[list[float]]:
    """Paste rows of faces onto `canvas` (in place), back (top, small) to front; returns their boxes."""
    height, width = canvas.shape[:2]
    protect = np.zeros((height, width), bool)
    placed = []
    top = rng.uniform(0.05, 0.25) * height
    y = top
    while True:
        depth = (y - top) / max(height - top, 1)
        face_h = FACE_HEIGHTS[0] + (FACE_HEIGHTS[1] - FACE_HEIGHTS[0]) * depth * rng.uniform(0.85, 1.15)
        face_h = float(np.clip(face_h, *FACE_HEIGHTS))
        if y + face_h > height - 2:
            break
        x = rng.uniform(0.0, 1.5) * face_h
        while x + face_h < width - 2:
            face = faces[int(rng.integers(len(faces)))]
            if face.image not in photos:
                photos[face.image] = load_rgb(face.image)
            patch, alpha, box = face_patch(face, photos[face.image], face_h, bool(rng.integers(2)), rng)
            left = round(x - box[0])
            row_top = round(y + rng.uniform(-0.15, 0.15) * face_h - box[1])
            gt = [box[0] + left, box[1] + row_top, box[2] + left, box[3] + row_top]
            if gt[0] < 0 or gt[1] < 0 or gt[2] > width or gt[3] > height:
                x += face_h
                continue
            paste(canvas, protect, patch, alpha, left, row_top)
            protect[int(gt[1]) : int(np.ceil(gt[3])), int(gt[0]) : int(np.ceil(gt[2]))] = True
            placed.append([round(v, 1) for v in gt])
            x = gt[2] + rng.uniform(0.8, 3.0) * face_h
        y += face_h * rng.uniform(2.0, 3.0)
    return placed


def paste(canvas: np.ndarray, protect: np.ndarray, patch: np.ndarray, alpha: np.ndarray, left: int, top: int) -> None:
    """Blend `patch` into `canvas` at (left, top) with `alpha`, never over `protect`ed pixels."""
    height, width = canvas.shape[:2]
    x1, y1 = max(left, 0), max(top, 0)
    x2, y2 = min(left + patch.shape[1], width), min(top + patch.shape[0], height)
    if x2 <= x1 or y2 <= y1:
        return
    part = patch[y1 - top : y2 - top, x1 - left : x2 - left].astype(np.float32)
    weight = alpha[y1 - top : y2 - top, x1 - left : x2 - left] * ~protect[y1:y2, x1:x2]
    region = canvas[y1:y2, x1:x2].astype(np.float32)
    canvas[y1:y2, x1:x2] = np.round(region + (part - region) * weight[..., None]).astype(np.uint8)


def build(out: Path, afw: Path, media: Path, count: int, seed: int) -> dict:
    """Write the crowd set into `out`; returns its annotations."""
    rng = np.random.default_rng(seed)
    faces, known = afw_faces(afw)
    backgrounds = [media / name for name in STREET if (media / name).exists()] + sorted(known)
    (out / "images").mkdir(parents=True, exist_ok=True)
    photos: dict[Path, np.ndarray] = {}
    entries = []
    for index in range(count):
        source = backgrounds[int(rng.integers(len(backgrounds)))]
        height = int(HEIGHTS[index % len(HEIGHTS)])
        canvas, ignored = background(source, height, rng, known.get(source, []))
        placed = crowd_image(canvas, faces, photos, rng)
        name = f"images/crowd_{index:03d}.jpg"
        Image.fromarray(canvas).save(out / name, quality=80)
        boxes = [dict(label="face", x1=b[0], y1=b[1], x2=b[2], y2=b[3], ignore=False) for b in placed]
        boxes += [dict(label="face", x1=b[0], y1=b[1], x2=b[2], y2=b[3], ignore=True) for b in ignored]
        entries.append({"file": name, "width": WIDTH, "height": height, "boxes": boxes, "background": source.name})
    annotations = {
        "dataset": f"crowd_seed{seed}",
        "source": "AFW faces scaled to 10-30 px high on blurred AFW and street backgrounds (bench/crowd.py)",
        "license": "measurement only, as its sources",
        "classes": ["face"],
        "images": entries,
    }
    (out / "annotations.json").write_text(json.dumps(annotations, indent=1) + "\n")
    return annotations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write annotations.json and images/ into")
    parser.add_argument("--afw", type=Path, default=SHARED / "faces_afw", help="the faces_afw data set")
    parser.add_argument("--media", type=Path, default=SHARED / "media", help="folder with the street photos")
    parser.add_argument("--images", type=int, default=30, help="how many crowd images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    annotations = build(args.out, args.afw, args.media, args.images, args.seed)
    faces = sum(not b["ignore"] for e in annotations["images"] for b in e["boxes"])
    sys.stdout.write(f"{len(annotations['images'])} images, {faces} faces 10-30 px high in {args.out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

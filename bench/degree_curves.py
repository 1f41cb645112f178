"""What each degree does, next to BMW's formula: pictures and correlations.

    .venv/bin/python -m bench.degree_curves [--out docs]

For each technique, renders OUT/degrees-<technique>.png: the face of grace_hopper at 40 px (shown
5x, nearest neighbour, so its pixels can be seen) and at 220 px, as it is and at degrees 0.1 to 1.
Then prints, per technique, degree and face size, the correlation with the original face of ours
and of BMW's formula (computed with PIL as BMW computes it): the luminance at 24 x 24 px, the
face's coarse structure, and at full size. Lower hides more; a flat result is 0. Blackening is
BMW's own formula, and a fade keeps the correlation at 1 until black, so it has no column.
"""

import argparse
import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from anonymization_api.techniques import TECHNIQUES, TechniqueOptions
from tests.support import bmw
from tests.support.images import ASTRONAUT_FACE, GRACE_HOPPER_FACE, astronaut, face_at, grace_hopper

DEGREES = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
SMALL, LARGE, ZOOM = 40, 220, 5
PICTURED = ("pixelating", "blurring", "box_blur", "median_blur", "bilateral_blur", "blackening")
MEASURED = ("pixelating", "blurring", "box_blur", "median_blur", "bilateral_blur")
GAP, LABEL = 6, 22
MAX_BYTES = 195 * 1024
INK, PAPER = (30, 30, 30), (255, 255, 255)


def picture(name: str, small: np.ndarray, large: np.ndarray) -> np.ndarray:
    """Two rows (the small face enlarged, the large face) of the face and its degrees, labelled."""
    options = TechniqueOptions()
    rows = [
        (f"{SMALL} px face, shown {ZOOM}x", [small] + [TECHNIQUES[name](small, d, options) for d in DEGREES], ZOOM),
        (f"{LARGE} px face", [large] + [TECHNIQUES[name](large, d, options) for d in DEGREES], 1),
    ]
    cell_w = max(max(cells[0].shape[1] * zoom for _, cells, zoom in rows), 150)
    width = GAP + (len(DEGREES) + 1) * (cell_w + GAP)
    height = LABEL + sum(LABEL + cells[0].shape[0] * zoom + GAP for _, cells, zoom in rows)
    canvas = np.full((height, width, 3), PAPER, np.uint8)
    for index, text in enumerate(["original"] + [f"degree {d:g}" for d in DEGREES]):
        _text(canvas, text, GAP + index * (cell_w + GAP), LABEL - 6)
    y = LABEL
    for title, cells, zoom in rows:
        _text(canvas, f"{name}: {title}", GAP, y + LABEL - 6)
        y += LABEL
        for index, cell in enumerate(cells):
            shown = cv2.resize(cell, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
            x = GAP + index * (cell_w + GAP)
            canvas[y : y + shown.shape[0], x : x + shown.shape[1]] = shown
        y += cells[0].shape[0] * zoom + GAP
    return canvas


def _text(canvas: np.ndarray, text: str, x: int, y: int) -> None:
    cv2.putText(canvas, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, INK, 1, cv2.LINE_AA)


def save_png(image: np.ndarray, path: Path) -> str:
    """Saved as the first of lossless, 6 bits a channel and a 256-colour palette that stays under
    MAX_BYTES (blurs band in a palette, faded photos need one); says which and the size."""
    encodings = {
        "lossless": Image.fromarray(image),
        "6 bits a channel": Image.fromarray(image & 0xFC),
        "256 colours": Image.fromarray(image).quantize(256, method=Image.Quantize.MEDIANCUT),
    }
    for encoding, encoded in encodings.items():
        buffer = io.BytesIO()
        encoded.save(buffer, format="PNG", optimize=True)
        if buffer.tell() <= MAX_BYTES or encoding == "256 colours":
            path.write_bytes(buffer.getvalue())
            return f"{encoding}, {buffer.tell() // 1024} KB"
    raise AssertionError("the last encoding is always written")


def table(faces: dict[int, np.ndarray], side: int | None) -> list[str]:
    """A markdown table: a row per degree, "ours / BMW's" per technique and face size."""
    header = ["degree"] + [f"{name} {size} px" for name in MEASURED for size in faces]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for degree in DEGREES:
        cells = [f"{degree:g}"]
        for name in MEASURED:
            for face in faces.values():
                ours = bmw.correlation(face, TECHNIQUES[name](face, degree, TechniqueOptions()), side)
                theirs = bmw.correlation(face, bmw.REFERENCE[name](face, degree), side)
                cells.append(f"{ours:.2f} / {theirs:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    small, large = (face_at(grace_hopper(), GRACE_HOPPER_FACE, side) for side in (SMALL, LARGE))
    for name in PICTURED:
        path = args.out / f"degrees-{name}.png"
        print(f"{path}: {save_png(picture(name, small, large), path)}")
    photos = {"grace_hopper": (grace_hopper(), GRACE_HOPPER_FACE), "astronaut": (astronaut(), ASTRONAUT_FACE)}
    for photo, (image, box) in photos.items():
        faces = {side: face_at(image, box, side) for side in (SMALL, LARGE)}
        for side, what in ((24, "at 24 x 24 px"), (None, "at full size")):
            print(f"\nCorrelation with the {photo} face {what}, ours / BMW's (lower hides more):\n")
            print("\n".join(table(faces, side)))


if __name__ == "__main__":
    main()

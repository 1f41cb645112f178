"""The before/after picture of the README and the documentation's home page, made by the service.

    .venv/bin/python -m anonymizer_tools.readme_picture              # starts its own stack on free ports
    .venv/bin/python -m anonymizer_tools.readme_picture --api http://127.0.0.1:4343 --key KEY

Each source image is sent to `POST /anonymize` with the configuration below, and the answers are laid
out under their originals in `docs/before-after.jpg`. The sources are permissively licensed and ship
in pinned packages, or are drawn here, so anyone can make the same picture from a clone:

- scikit-image's `astronaut` (NASA, public domain): her face, blurred;
- scikit-image's `camera` (CC0, by Lav Varshney): the person, blurred;
- a number plate drawn by this script (no permissively licensed street photograph with a readable
  plate ships in a package): the plate, pixelated.
"""

import argparse
import io
import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import httpx
import numpy as np
from PIL import Image

from anonymizer_shared.files import PROJECT_ROOT

OUTPUT = PROJECT_ROOT / "docs" / "before-after.jpg"
TILE = 320  # each image is shown this many pixels square
FACES = (("face", "blurring"),)
PERSONS = (("person", "blurring"),)
PLATES = (("license_plate", "pixelating"),)


def configuration(classes: tuple[tuple[str, str], ...]) -> str:
    entries = [
        {
            "class_name": name,
            "inference_type": "detection",
            "anonymization_technique": technique,
            "anonymization_degree": 1,
        }
        for name, technique in classes
    ]
    return json.dumps({"sensitive_info": entries})


def drawn_plate() -> np.ndarray:
    """The back of a car, drawn: a dark bumper with a white number plate (our own picture, MIT)."""
    image = np.full((512, 512, 3), (176, 188, 196), np.uint8)
    cv2.rectangle(image, (40, 150), (472, 420), (38, 52, 92), -1)  # the car's body
    cv2.rectangle(image, (70, 190), (150, 240), (40, 40, 200), -1)  # lights
    cv2.rectangle(image, (362, 190), (442, 240), (40, 40, 200), -1)
    cv2.rectangle(image, (136, 290), (376, 346), (250, 250, 250), -1)  # the plate
    cv2.rectangle(image, (136, 290), (376, 346), (20, 20, 20), 2)
    cv2.putText(image, "AB 1234", (160, 334), cv2.FONT_HERSHEY_DUPLEX, 1.5, (15, 15, 15), 3, cv2.LINE_AA)
    cv2.rectangle(image, (40, 420), (110, 470), (20, 20, 20), -1)  # wheels
    cv2.rectangle(image, (402, 420), (472, 470), (20, 20, 20), -1)
    return image


def sources() -> list[tuple[np.ndarray, tuple[tuple[str, str], ...]]]:
    """Each image with what is hidden in it."""
    from skimage import data

    return [
        (data.astronaut(), FACES),
        (np.stack([data.camera()] * 3, axis=-1), PERSONS),
        (drawn_plate(), PLATES),
    ]


def anonymise(api: str, key: str | None, image: np.ndarray, classes: tuple[tuple[str, str], ...]) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    headers = {"X-API-Key": key} if key else {}
    response = httpx.post(
        f"{api.rstrip('/')}/anonymize",
        files={"image": ("image.png", buffer.getvalue(), "image/png")},
        data={"configuration": configuration(classes)},
        headers=headers,
        timeout=300,
    )
    if response.status_code != 200:
        raise RuntimeError(f"/anonymize answered {response.status_code}: {response.text}")
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


def layout(pairs: list[tuple[np.ndarray, np.ndarray]]) -> Image.Image:
    """Originals in the top row, the service's answers under them, a thin gap between."""
    gap = 6
    width = len(pairs) * TILE + (len(pairs) - 1) * gap
    canvas = Image.new("RGB", (width, 2 * TILE + gap), "white")
    for column, (before, after) in enumerate(pairs):
        x = column * (TILE + gap)
        for row, picture in enumerate((before, after)):
            tile = Image.fromarray(picture).resize((TILE, TILE), Image.Resampling.LANCZOS)
            canvas.paste(tile, (x, row * (TILE + gap)))
    return canvas


@contextmanager
def own_stack() -> Iterator[str]:
    """Both inference servers and the API on free loopback ports, the servers registered."""
    from anonymizer_tools.processes import running

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with (
            running(["serve-detection"], "/v2/health/ready", folder / "detection.log") as detection,
            running(["serve-segmentation"], "/v2/health/ready", folder / "segmentation.log") as segmentation,
            running(["serve-api", "--data-dir", str(folder)], "/health", folder / "api.log") as api,
        ):
            for server in (detection, segmentation):
                httpx.post(f"{api}/set_url", data={"url": server + "/"}, timeout=60).raise_for_status()
            yield api


def make(api: str, key: str | None, output: Path) -> Path:
    pairs = [(image, anonymise(api, key, image, classes)) for image, classes in sources()]
    output.parent.mkdir(parents=True, exist_ok=True)
    layout(pairs).save(output, "JPEG", quality=85, optimize=True)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", help="a running API (default: start a stack of its own on free ports)")
    parser.add_argument("--key", help="an API key, where the API asks for one")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    if args.api:
        path = make(args.api, args.key, args.output)
    else:
        with own_stack() as api:
            path = make(api, args.key, args.output)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

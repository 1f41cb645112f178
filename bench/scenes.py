"""Benchmark inputs built from packaged images, so every benchmark runs on a fresh clone."""

import io
import json

import matplotlib.cbook
import numpy as np
import skimage.data
from PIL import Image


def portraits_scene(width: int, height: int) -> np.ndarray:
    """RGB (height, width, 3): packaged portraits (grace_hopper, astronaut) tiled at several sizes."""
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        hopper = Image.open(handle).convert("RGB")
    astronaut = Image.fromarray(skimage.data.astronaut())
    canvas = Image.new("RGB", (width, height), (90, 110, 130))
    x, y, row_height, index = 0, 0, 0, 0
    for scale in (0.9, 0.5, 0.3, 0.2, 0.12, 0.08):
        for portrait in (hopper, astronaut):
            tile = portrait.resize((max(8, int(portrait.width * scale)), max(8, int(portrait.height * scale))))
            if x + tile.width > width:
                x, y, row_height = 0, y + row_height, 0
            if y + tile.height > height:
                return np.asarray(canvas)
            canvas.paste(tile, (x, y))
            x, row_height, index = x + tile.width, max(row_height, tile.height), index + 1
    return np.asarray(canvas)


def jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


# The default face configuration, as BMW's clients send it: what the benchmarks anonymise with.
FACE_CONFIG = json.dumps(
    {
        "sensitive_info": [
            {
                "class_name": "face",
                "inference_type": "detection",
                "anonymization_technique": "blurring",
                "anonymization_degree": 1,
            }
        ]
    }
)

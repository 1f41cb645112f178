"""Reading uploaded images and writing anonymised ones, without any of the input's metadata."""

import io
from enum import StrEnum

import numpy as np
from PIL import Image

from anonymization_api.errors import InvalidRequest


class OutputFormat(StrEnum):
    JPEG = "jpeg"
    PNG = "png"
    WEBP = "webp"

    @property
    def media_type(self) -> str:
        return f"image/{self.value}"

    @classmethod
    def choose(cls, input_format: str, requested: str | None) -> "OutputFormat":
        """The requested format, else the input's own where we can write it, else PNG (lossless)."""
        if requested:
            try:
                return cls(requested.strip().lower().replace("jpg", "jpeg"))
            except ValueError:
                raise InvalidRequest(
                    f"output_format '{requested}' is not supported; valid: {[f.value for f in cls]}"
                ) from None
        return {"JPEG": cls.JPEG, "MPO": cls.JPEG, "WEBP": cls.WEBP}.get(input_format.upper(), cls.PNG)


def encode_image(image: np.ndarray, output: OutputFormat, quality: int) -> bytes:
    """Encode RGB uint8 (H, W, 3) from its pixels alone: no EXIF, GPS, ICC or comments survive."""
    buffer = io.BytesIO()
    picture = Image.fromarray(image)
    if output is OutputFormat.JPEG:
        picture.save(buffer, format="JPEG", quality=quality, optimize=False)
    elif output is OutputFormat.WEBP:
        picture.save(buffer, format="WEBP", quality=quality)
    else:
        picture.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()

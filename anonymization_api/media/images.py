"""Reading uploaded images and writing anonymised ones, without any of the input's metadata."""

from enum import StrEnum

import cv2
import numpy as np

from anonymization_api.errors import InvalidRequest
from anonymizer_shared.png import encode_png


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
    if output is OutputFormat.PNG:
        return encode_png(image)
    options = {
        OutputFormat.JPEG: [cv2.IMWRITE_JPEG_QUALITY, quality],
        OutputFormat.WEBP: [cv2.IMWRITE_WEBP_QUALITY, quality],
    }[output]
    ok, encoded = cv2.imencode(f".{output.value}", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), options)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {image.shape} image as {output.value}")
    return encoded.tobytes()

"""Image decoding for every server: bytes -> RGB uint8 (H, W, 3), EXIF orientation applied,
size limits enforced before the pixels are decoded."""

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from inference_common.errors import InvalidImage, PayloadTooLarge


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode an encoded image to RGB uint8 (H, W, 3), upright as its EXIF orientation says."""
    return read_image(data, max_pixels)[0]


def read_image(data: bytes, max_pixels: int) -> tuple[np.ndarray, str]:
    """Like `decode_image`, also naming the file's format as Pillow does (JPEG, PNG, WEBP, ...)."""
    if not data:
        raise InvalidImage("the image is empty; send the bytes of a JPEG, PNG, WebP, BMP or TIFF file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise PayloadTooLarge(
                    f"the image is {width}x{height} = {width * height} pixels, more than the limit of "
                    f"{max_pixels}; downscale it or raise the server's max_image_pixels"
                )
            file_format = image.format or "PNG"
            image = ImageOps.exif_transpose(image).convert("RGB")
            return np.asarray(image), file_format
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidImage(f"the image could not be decoded ({exc}); send a JPEG, PNG, WebP, BMP or TIFF") from exc


def encode_png(image: np.ndarray) -> bytes:
    """Encode an RGB (H, W, 3) or label (H, W) uint8 array as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()

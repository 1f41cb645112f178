"""The encoders of anonymised images: PNG stays lossless at its fast compression."""

import io
import struct

import cv2
import numpy as np
import pytest
from PIL import Image

from anonymization_api.media.images import OutputFormat, encode_image
from anonymizer_shared.images import read_image, shrink
from anonymizer_shared.png import encode_png
from tests.support.images import astronaut


def test_png_output_decodes_to_the_same_pixels():
    image = astronaut()
    image[100:200, 150:300] = 0  # a blackened region, as the service writes it
    encoded = encode_image(image, OutputFormat.PNG, quality=90)
    decoded, file_format = read_image(encoded, 10**8)
    assert file_format == "PNG"
    assert np.array_equal(decoded, image)


def test_png_output_is_compressed():
    image = astronaut()
    encoded = encode_image(image, OutputFormat.PNG, quality=90)
    best = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1]
    assert len(encoded) < image.nbytes * 0.8  # far from the raw pixels ...
    assert len(encoded) < len(best) * 1.15  # ... and close to the smallest zlib gives


def chunk_types(png: bytes) -> list[bytes]:
    types, offset = [], 8
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        types.append(png[offset + 4 : offset + 8])
        offset += 12 + length
    return types


@pytest.mark.parametrize("shape", [(1, 1), (1, 700), (63, 5), (64, 64), (129, 33), (755, 1024)])
def test_png_strips_join_into_one_image_every_reader_reads(shape):
    """The rows are compressed in strips on several threads; Pillow (checking every CRC) and OpenCV
    read the joined stream back to the same pixels, whatever the number of strips."""
    image = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), np.uint8)
    image[: shape[0] // 2] //= 8  # runs and noise, so every strip compresses differently
    encoded = encode_png(image)
    opened = Image.open(io.BytesIO(encoded))
    opened.verify()
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB")), image)
    assert np.array_equal(cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR_RGB), image)
    assert chunk_types(encoded) == [b"IHDR", b"IDAT", b"IEND"]  # nothing but the pixels


def test_a_grey_png_reads_back_as_written():
    """Grey (H, W) images, such as label maps, are written as PNG colour type 0."""
    image = np.random.default_rng(7).integers(0, 4, (300, 41), np.uint8)
    encoded = encode_png(image)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encoded))), image)
    assert np.array_equal(cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_UNCHANGED), image)


@pytest.mark.parametrize("side", [300, 500, 700, 1080])
def test_shrink_averages_as_inter_area_does(side):
    # The cheap shrink of video windows and detection sizes: within a grey level of OpenCV's
    # area averaging on a photo, where plain bilinear sampling aliases (several levels off).
    photo = cv2.resize(astronaut(), (side, side), interpolation=cv2.INTER_CUBIC)
    area = cv2.resize(photo, (256, 256), interpolation=cv2.INTER_AREA).astype(np.float64)
    ours = shrink(photo, (256, 256))
    assert ours.shape == (256, 256, 3) and ours.dtype == np.uint8
    assert np.abs(ours - area).mean() < 1.0
    if side >= 700:
        bilinear = cv2.resize(photo, (256, 256), interpolation=cv2.INTER_LINEAR).astype(np.float64)
        assert np.abs(bilinear - area).mean() > 2 * np.abs(ours - area).mean()

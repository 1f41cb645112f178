"""Pure pieces of the inference servers: image decoding, CenterFace decoding, output packing."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from anonymizer_shared.boxes import scale_to_fit
from anonymizer_shared.images import ImageTooLarge, InvalidImage, decode_image, read_image
from anonymizer_shared.wire import pack_detections, unpack_detections
from inference_detection.centerface import CenterFaceParams, decode


def jpeg_with_orientation(orientation: int) -> bytes:
    image = np.zeros((40, 100, 3), np.uint8)
    image[:, :50] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def test_exif_orientation_is_applied():
    upright = decode_image(jpeg_with_orientation(1), 10**6)
    rotated = decode_image(jpeg_with_orientation(6), 10**6)  # 6: rotate 90 degrees clockwise to view
    assert upright.shape == (40, 100, 3)
    assert rotated.shape == (100, 40, 3)
    assert rotated[:50].mean() > 200 and rotated[60:].mean() < 50  # the white half is now on top


def test_decode_rejects_garbage_and_bombs():
    with pytest.raises(InvalidImage):
        decode_image(b"GIF89a but not really", 10**6)
    with pytest.raises(InvalidImage):
        decode_image(b"", 10**6)
    with pytest.raises(ImageTooLarge):
        decode_image(jpeg_with_orientation(1), 100)


def test_centerface_decode_places_a_box_at_the_peak():
    heatmap = np.zeros((10, 20), np.float32)
    heatmap[5, 8] = 0.9
    log_scale = np.full((2, 10, 20), np.log(16 / 4), np.float32)  # a 16x16 px face
    offset = np.zeros((2, 10, 20), np.float32)
    dets = decode(heatmap, log_scale, offset, threshold=0.5)
    assert dets.shape == (1, 6)
    center = (8 + 0.5) * 4, (5 + 0.5) * 4
    np.testing.assert_allclose(dets[0, :4], [center[0] - 8, center[1] - 8, center[0] + 8, center[1] + 8], atol=1e-4)
    assert decode(heatmap, log_scale, offset, threshold=0.95).shape == (0, 6)


def test_pack_and_unpack_are_inverse():
    first = np.array([[1, 2, 3, 4, 0.9, 0], [5, 6, 7, 8, 0.5, 0]], np.float32)
    second = np.empty((0, 6), np.float32)
    packed = pack_detections([first, second])
    assert packed["num_dets"].tolist() == [[2], [0]]
    assert packed["det_boxes"].shape == (2, 2, 4)
    restored = unpack_detections(packed)
    np.testing.assert_array_equal(restored[0], first)
    assert restored[1].shape == (0, 6)


def test_network_size_is_capped_and_aligned():
    assert scale_to_fit(1920, 1080, 1.0, 10**8, 32) == (1920, 1088)
    width, height = scale_to_fit(1920, 1080, 2.0, 2_100_000, 32)
    assert width % 32 == 0 and height % 32 == 0 and width * height < 2_300_000


def test_scales_accept_a_comma_separated_string():
    assert CenterFaceParams.model_validate({"scales": "1, 1.5"}).scales == [1.0, 1.5]
    with pytest.raises(ValueError, match=r"0\.1\.\.4"):
        CenterFaceParams.model_validate({"scales": [0]})


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_as_pillow_does(orientation):
    stored = np.zeros((40, 64, 3), np.uint8)
    stored[:10, :20] = (255, 0, 0)  # a red patch top left and a green one bottom left: every turn differs
    stored[30:, :16] = (0, 255, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, format="PNG", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buffer.getvalue()))).convert("RGB"))
    pixels, file_format = read_image(buffer.getvalue(), 10_000)
    assert file_format == "PNG"
    assert np.array_equal(pixels, expected)


def test_a_png_with_its_exif_chunk_after_the_pixels_is_still_turned():
    """An eXIf chunk may follow the image data; Pillow finds it only by decoding the whole PNG, which
    `read_image` skips where no such chunk is in the file."""
    stored = np.zeros((40, 64, 3), np.uint8)
    stored[:10, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, format="PNG")
    plain = buffer.getvalue()
    payload = exif.tobytes()
    chunk = struct.pack(">I", len(payload)) + b"eXIf" + payload + struct.pack(">I", zlib.crc32(b"eXIf" + payload))
    late = plain[:-12] + chunk + plain[-12:]  # before IEND, after IDAT
    assert read_image(plain, 10_000)[0].shape == (40, 64, 3)
    turned, _ = read_image(late, 10_000)
    assert turned.shape == (64, 40, 3)
    assert np.array_equal(turned, np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(late))).convert("RGB")))

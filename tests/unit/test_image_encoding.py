"""The encoders of anonymised images: PNG stays lossless at its fast compression."""

import cv2
import numpy as np

from anonymization_api.media.images import OutputFormat, encode_image
from anonymizer_shared.images import read_image
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

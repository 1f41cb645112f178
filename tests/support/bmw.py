"""BMW Anonymization API's degree formulas, computed with PIL as BMW computes them, to hold ours
against (tests and `bench.degree_curves`). The service itself never runs these.

From BMW's src/main/anonymization/detection_anonymization.py and segmentation_anonymization.py
(the same arithmetic in both; the segmentation one pastes the result through the mask):

- pixelating: the box, a PIL image w x h, is resized with Image.BILINEAR to
  int(w / (degree * w)) x int(h / (degree * h)) px and back to w x h with Image.NEAREST: 1 / degree
  blocks a side, rounded down in float arithmetic (0.1 gives 9 or 10 blocks by size, 0.2 gives 4 or
  5, 0.3 gives 3, 0.5 gives 2, every degree above 0.5 one flat colour). Degree 0 divides by zero.
- blurring: ImageFilter.GaussianBlur(25 * degree) on the cropped box. PIL's radius is the
  Gaussian's standard deviation in pixels (three box passes approximate it), whatever the box's
  size. Degree 0: PIL returns the crop unchanged.
- blackening: Image.blend(crop, black, degree), the pixels times (1 - degree): it depends on the
  degree, and degree 1 is black.

BMW has no box, median or bilateral blur.
"""

import numpy as np
from PIL import Image, ImageFilter

BLUR_SIGMA_PER_DEGREE = 25.0


def pixelating(region: np.ndarray, degree: float) -> np.ndarray:
    image = Image.fromarray(region)
    width, height = image.size
    blocks = (int(width / (degree * width)), int(height / (degree * height)))
    return np.asarray(image.resize(blocks, Image.BILINEAR).resize(image.size, Image.NEAREST))


def blurring(region: np.ndarray, degree: float) -> np.ndarray:
    return np.asarray(Image.fromarray(region).filter(ImageFilter.GaussianBlur(BLUR_SIGMA_PER_DEGREE * degree)))


def blackening(region: np.ndarray, degree: float) -> np.ndarray:
    image = Image.fromarray(region)
    return np.asarray(Image.blend(image, Image.new(image.mode, image.size, "black"), degree))


# What each of our techniques is held to: BMW's technique of that name, and its Gaussian blur for
# the blurs BMW does not have.
REFERENCE = {
    "pixelating": pixelating,
    "blurring": blurring,
    "gaussian_blur": blurring,
    "box_blur": blurring,
    "median_blur": blurring,
    "bilateral_blur": blurring,
    "blackening": blackening,
}


def correlation(original: np.ndarray, hidden: np.ndarray, side: int | None = None) -> float:
    """How much `hidden` still looks like `original`: the size of the Pearson correlation of their
    luminance (an inverted picture shows as much), at full size or shrunk to `side` x `side` px (a
    face's coarse structure, what recognising it works from); 0 when either is flat."""
    a, b = (np.asarray(Image.fromarray(x).convert("L"), np.float64) for x in (original, hidden))
    if side is not None:
        a, b = (_shrunk(x, side) for x in (a, b))
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return abs(float(np.corrcoef(a.ravel(), b.ravel())[0, 1]))


def _shrunk(luminance: np.ndarray, side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(luminance.astype(np.float32), "F").resize((side, side), Image.BOX))

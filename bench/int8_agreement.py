"""How close INT8 CenterFace's heatmap is to the float network's, on real photos and video frames:
the figures behind which layers `models fetch` leaves in float (`inference_common.quantisation`).

    .venv/bin/python -m bench.int8_agreement [--dataset DIR] [--limit 80] [--int8 OTHER.xml ...]

Per network, over the first `--limit` WIDER FACE photos (cropped to a multiple of 32, one pass at
1x) and 20 frames of the PETS video (enlarged 2x, where its 5-15 px faces are found):
- error: the mean absolute difference of the two heatmaps where either scores over 0.05;
- float peaks: local maxima of the float heatmap at 0.1 or more (the default threshold), and how
  many of them INT8 scores under 0.1 (missed) or INT8 has where float has none (added).
Float here is the network INT8 is made from, in the precision this CPU infers in (f32 on the AVX2
path: `ONEDNN_MAX_CPU_ISA=AVX2 ANONYMIZER_INFERENCE_PRECISION=f32`, where INT8 runs). `--int8` adds
other INT8 networks (OpenVINO IR) to compare with the one `models fetch` made.
"""

import argparse
from pathlib import Path

import av
import cv2
import numpy as np

from anonymizer_tools.evaluation import load_dataset
from inference_common.engine import make_engine
from inference_common.models import CENTERFACE, PROJECT_ROOT, default_models_dir, fetch_models
from inference_common.quantisation import CENTERFACE_INT8, describe_machine

SCORE = 0.1
AROUND = np.ones((3, 3), np.uint8)


def heatmap(engine, image: np.ndarray) -> np.ndarray:
    return engine.infer(image[None])[0][0, 0]


def agreement(reference, engine, images: list[np.ndarray]) -> tuple[float, int, int, int]:
    """Mean error where either scores over 0.05; float peaks; those INT8 misses; INT8 peaks added."""
    errors, peaks, missed, added = [], 0, 0, 0
    for image in images:
        ours, theirs = heatmap(reference, image), heatmap(engine, image)
        either = (ours > 0.05) | (theirs > 0.05)
        if either.any():
            errors.append(float(np.abs(ours - theirs)[either].mean()))
        ours_peaks = (ours >= SCORE) & (ours >= cv2.dilate(ours, AROUND))
        theirs_peaks = (theirs >= SCORE) & (theirs >= cv2.dilate(theirs, AROUND))
        peaks += int(ours_peaks.sum())
        missed += int((ours_peaks & (cv2.dilate(theirs, AROUND) < SCORE)).sum())
        added += int((theirs_peaks & (cv2.dilate(ours, AROUND) < SCORE)).sum())
    return float(np.mean(errors)), peaks, missed, added


def wider_photos(dataset: Path, limit: int) -> list[np.ndarray]:
    photos = []
    for item in load_dataset(dataset, limit)["images"]:
        image = cv2.imread(str(dataset / item["file"]), cv2.IMREAD_COLOR_RGB)
        height, width = image.shape[:2]
        photos.append(image[: height // 32 * 32, : width // 32 * 32])
    return photos


def pets_frames(video: Path, count: int = 20, every: int = 20) -> list[np.ndarray]:
    frames = []
    with av.open(str(video)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index % every == 0:
                frames.append(cv2.resize(frame.to_ndarray(format="rgb24"), (960, 704)))
            if len(frames) == count:
                break
    return frames


def main() -> None:
    data = PROJECT_ROOT.parent / "shared" / "data"
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", type=Path, default=data / "faces_wider_train")
    parser.add_argument("--video", type=Path, default=data / "media" / "vtest_pets2009_480x360_h264.avi")
    parser.add_argument("--limit", type=int, default=80)
    parser.add_argument("--int8", type=Path, nargs="*", default=[])
    args = parser.parse_args()
    models = default_models_dir()
    fetch_models(models)
    print(describe_machine(models))
    source = CENTERFACE.path_in(models)
    reference = make_engine(source, CENTERFACE_INT8.pixels)
    sets = {"WIDER 1x": wider_photos(args.dataset, args.limit), "PETS 2x": pets_frames(args.video)}
    networks = {"INT8 (models fetch)": CENTERFACE_INT8.paths(models)[0], **{str(path): path for path in args.int8}}
    print(f"{'network':<28}" + "".join(f"{name + ': error, float peaks, missed, added':>48}" for name in sets))
    for name, path in networks.items():
        engine = make_engine(source, CENTERFACE_INT8.pixels, openvino_path=path)
        figures = [agreement(reference, engine, images) for images in sets.values()]
        print(f"{name:<28}" + "".join(f"{f'{e:.4f}, {p}, {m}, {a}':>48}" for e, p, m, a in figures))


if __name__ == "__main__":
    main()

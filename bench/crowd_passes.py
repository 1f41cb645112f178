"""What each pass of the CenterFace cascade buys in coverage and costs in time, on real crowd photos
(WIDER FACE train by default), through the real servers: the passes of a video frame's default,
of a photo's (the `photo` preset) and the ones they could run, each as `model_parameters` of the
face entry. Every variant states its scales and threshold, since a photo sent without them would get
the photo preset's.

    .venv/bin/python -m bench.crowd_passes [--dataset DIR] [--limit N]

Per variant: coverage recall and over-anonymisation (`anonymizer eval`'s scoring), images per
second with `detections=only` (no image encoded: the passes' own cost), and the network's time per
image from the detection server's metrics. The variants run in turn, twice, and the faster run of
each counts; the default is the variant that covers most at a cost the speed targets allow
(docs/benchmarks.md).
"""

import argparse
import tempfile
from pathlib import Path
from typing import Any

import httpx

from anonymization_api.configuration import PHOTO_PRESET
from anonymizer_tools.evaluation import configuration_for, load_dataset, run_pass, tally
from anonymizer_tools.processes import running
from bench.budget import Budget
from bench.images_vs_deface import LABEL, WIDER
from inference_common.models import default_models_dir, fetch_models
from inference_common.quantisation import describe_machine
from inference_detection.centerface import CenterFace, CenterFaceParams


def as_model_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """CenterFace's parameters as an entry's `model_parameters` take them (scales as comma-separated text)."""
    return {key: ",".join(map(str, value)) if isinstance(value, list) else value for key, value in parameters.items()}


FRAMES = as_model_parameters(CenterFaceParams().model_dump(include={"scales", "score_threshold"}))  # a frame's default
PHOTO = as_model_parameters(CenterFace.presets[PHOTO_PRESET])  # a photo's default
# name -> model parameters of the face entry
VARIANTS: dict[str, dict[str, Any]] = {
    "1x only": {**FRAMES, "scales": "1"},
    "1x + 2x where a candidate is unfound": {**FRAMES, "upscaled_where": "unfound"},
    "1x + 2x on every candidate's tiles (frames)": FRAMES,
    "1x + 2x on the whole image": {**FRAMES, "upscaled_where": "everywhere"},
    "1x + 1.5x where a candidate is unfound": {**FRAMES, "scales": "1,1.5", "upscaled_where": "unfound"},
    "1x + 2x where unfound, mirrored 2x": {**FRAMES, "flip": "upscaled", "upscaled_where": "unfound"},
    "0.75x, then 1x + 2x on tiles, at 0.08 (photos)": PHOTO,
}
RUNS = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=WIDER)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    fetch_models(default_models_dir())
    print(describe_machine(default_models_dir()))
    images = load_dataset(args.dataset, args.limit)["images"]
    print(f"{args.dataset.name}: {len(images)} images")
    work = Path(tempfile.mkdtemp())
    rows = []
    with (
        running(["serve-detection"], "/v2/health/ready", work / "det.log") as detection,
        running(["serve-api", "--data-dir", str(work)], "/health", work / "api.log") as api,
    ):
        httpx.post(f"{api}/set_url", data={"url": detection}, timeout=60).raise_for_status()
        results: dict[str, Any] = {}
        for _ in range(RUNS):
            for name, parameters in VARIANTS.items():
                configuration = configuration_for([LABEL], None, None)
                entry = {**configuration["sensitive_info"][0], "model_parameters": parameters}
                configuration = {"sensitive_info": [entry]}
                run_pass(args.dataset, images[:2], api, configuration, [LABEL], 1, {})  # untimed start
                before = Budget.read(api, detection)
                found, seconds = run_pass(args.dataset, images, api, configuration, [LABEL], 1, {})
                network = sum(Budget.read(api, detection).since(before).networks_ms(len(images)).values())
                if name not in results or seconds < results[name][1]:
                    results[name] = (found, seconds, network)
        for name, (found, seconds, network) in results.items():
            figures = tally(images, found, LABEL).figures()
            rows.append(
                f"{name:<48}{figures['coverage_recall']:>9.3f}{figures['over_anonymisation']:>11.2f}"
                f"{len(images) / seconds:>10.2f}{network:>12.1f}"
            )
    print(f"{'passes':<48}{'coverage':>9}{'over-anon':>11}{'images/s':>10}{'network ms':>12}")
    print("\n".join(rows))


if __name__ == "__main__":
    main()

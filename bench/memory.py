"""Memory of the API and the detection server for large images sent at once, with the pixel budget
of admission (ANONYMIZER_API_PIXELS_AT_ONCE) as set and with it lifted, measured in one run.

    .venv/bin/python -m bench.memory [--side 6000] [--at-once 6] [--budget 48000000]

Each image is a PNG of SIDE x SIDE (a flat grey, about 100 KB: the cheapest input that costs the
most to decode) with the default face entry, sent AT_ONCE times concurrently through /anonymize.
Printed per setting: the peak resident memory of each process above its start (VmHWM), what the
API holds afterwards (VmRSS), and the time the batch took.
"""

import argparse
import io
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from anonymizer_tools.processes import peak_rss_mb, resident_mb, started

FACES = {"class_name": "face", "inference_type": "detection", "anonymization_technique": "blurring"}
CONFIG = json.dumps({"sensitive_info": [{**FACES, "anonymization_degree": 1}]})


def measure(folder: Path, image: bytes, at_once: int, budget: int) -> dict[str, float]:
    env = {"ANONYMIZER_API_PIXELS_AT_ONCE": str(budget), "ANONYMIZER_API_IMAGES_WAITING": str(at_once)}
    with (
        started(["serve-detection"], "/v2/health/ready", folder / "detection.log") as (detection, server),
        started(["serve-api", "--data-dir", str(folder / "data")], "/health", folder / "api.log", env=env) as (
            api,
            process,
        ),
    ):
        httpx.post(f"{api}/set_url", data={"url": detection}, timeout=60).raise_for_status()
        api_start, server_start = peak_rss_mb(process.pid), peak_rss_mb(server.pid)

        def send(_: int) -> int:
            files = {"image": ("large.png", image), "configuration": ("c.json", CONFIG)}
            return httpx.post(f"{api}/anonymize", files=files, timeout=900).status_code

        started_at = time.perf_counter()
        with ThreadPoolExecutor(at_once) as pool:
            answers = list(pool.map(send, range(at_once)))
        seconds = time.perf_counter() - started_at
        if answers != [200] * at_once:
            raise RuntimeError(f"answers: {answers}")
        return {
            "api_peak": peak_rss_mb(process.pid) - api_start,
            "api_after": resident_mb(process.pid) - api_start,
            "server_peak": peak_rss_mb(server.pid) - server_start,
            "seconds": seconds,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=6000)
    parser.add_argument("--at-once", type=int, default=6)
    parser.add_argument("--budget", type=int, default=48_000_000, help="ANONYMIZER_API_PIXELS_AT_ONCE to measure")
    args = parser.parse_args()
    buffer = io.BytesIO()
    Image.fromarray(np.full((args.side, args.side, 3), 128, np.uint8)).save(buffer, "PNG")
    megapixels = args.side * args.side / 1e6
    print(
        f"{args.at_once} PNGs of {args.side}x{args.side} ({megapixels:.0f} MP, {len(buffer.getvalue())} bytes) at once"
    )
    print(f"{'pixels at once':>16} {'API peak MB':>12} {'API after MB':>13} {'server peak MB':>15} {'seconds':>8}")
    for budget in (args.budget, 10**12):
        with tempfile.TemporaryDirectory() as folder:
            found = measure(Path(folder), buffer.getvalue(), args.at_once, budget)
        label = f"{budget / 1e6:.0f} MP" if budget < 10**12 else "unbounded"
        print(
            f"{label:>16} {found['api_peak']:>12.0f} {found['api_after']:>13.0f} "
            f"{found['server_peak']:>15.0f} {found['seconds']:>8.1f}"
        )


if __name__ == "__main__":
    main()

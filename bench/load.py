"""A bounded load on /anonymize: N clients for T seconds against the stack on loopback, printing
throughput, latency p50/p99 of the answers, the count of each status, and the API's peak memory.

    .venv/bin/python -m bench.load [--clients 16] [--seconds 20] [--images-at-once 2] [--waiting 2]

Loopback only: it starts its own inference server and API (with the admission bounds given), so
what it shows is the API's behaviour under more clients than it admits: explicit 503s with
Retry-After for the excess, and bounded waits for the rest, instead of every client waiting.
"""

import argparse
import collections
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from anonymizer_tools.processes import peak_rss_mb, running, started
from bench.scenes import FACE_CONFIG, jpeg, portraits_scene

CONFIG = FACE_CONFIG


def load(url: str, image: bytes, clients: int, seconds: float) -> tuple[collections.Counter, list[float], int]:
    statuses: collections.Counter = collections.Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(timeout=120) as http:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    response = http.post(
                        f"{url}/anonymize", files={"image": ("a.jpg", image), "configuration": ("c.json", CONFIG)}
                    )
                except httpx.TransportError as exc:
                    with lock:
                        statuses[f"no answer ({type(exc).__name__})"] += 1
                    continue
                elapsed = time.perf_counter() - started
                with lock:
                    statuses[response.status_code] += 1
                    latencies.append(elapsed)
                if response.status_code in (429, 503):
                    time.sleep(float(response.headers.get("retry-after", "1")))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses, latencies, statuses[200]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--images-at-once", type=int, default=2)
    parser.add_argument("--waiting", type=int, default=2)
    args = parser.parse_args()
    image = jpeg(portraits_scene(1280, 720))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {
            "ANONYMIZER_API_IMAGES_AT_ONCE": str(args.images_at_once),
            "ANONYMIZER_API_IMAGES_WAITING": str(args.waiting),
        }
        api_args = ["serve-api", "--data-dir", str(work / "data")]
        with (
            running(["serve-detection"], "/v2/health/ready", work / "detection.log") as detection,
            started(api_args, "/health", work / "api.log", env=env) as (api, process),
        ):
            httpx.post(f"{api}/set_url", data={"url": detection}, timeout=60).raise_for_status()
            warm = httpx.post(
                f"{api}/anonymize", files={"image": ("a.jpg", image), "configuration": ("c.json", CONFIG)}, timeout=300
            )
            warm.raise_for_status()  # the first inference compiles the network: not part of the load
            statuses, latencies, done = load(api, image, args.clients, args.seconds)
            rss = peak_rss_mb(process.pid)
    answered = sorted(latencies)
    print(f"{args.clients} clients for {args.seconds:.0f} s, {args.images_at_once} at once, {args.waiting} waiting")
    print(f"throughput: {done / args.seconds:.2f} images/s ({done} anonymised)")
    print(f"latency of all answers: p50 {statistics.median(answered) * 1000:.0f} ms, "
          f"p99 {answered[int(0.99 * (len(answered) - 1))] * 1000:.0f} ms")  # fmt: skip
    print("statuses: " + ", ".join(f"{code}: {count}" for code, count in sorted(statuses.items(), key=str)))
    print(f"API peak memory: {rss:.0f} MB")


if __name__ == "__main__":
    main()

"""The per-stage budget of one image or one video frame through the real services: what each stage
(receive, decode, detect, hide, encode, ...) took on average, read from the API's and the inference
server's /metrics before and after a timed pass (`anonymizer_shared.stages`, and the time inside each
network from `inference_common.server.metrics`). It shows the gap between a request and the network,
and what each change removes.

    before = Budget.read(api, detection)
    ... the timed pass ...
    print(Budget.read(api, detection).since(before).table(items, wall_seconds))
"""

from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from anonymizer_shared.stages import SECONDS_METRIC

# The API's stages in the order a request meets them; the inference server's come inside `detect`.
API_STAGES = ("receive", "decode", "detect", "track", "hide", "audit", "encode", "answer")
SERVER_STAGES = ("server receive", "server parse", "server model", "server answer")


def _scrape(url: str) -> dict[tuple[str, str], float]:
    """(sample name, label value) -> value of the stage and network counters at `url`/metrics."""
    text = httpx.get(f"{url}/metrics", timeout=30).raise_for_status().text
    values: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(("anonymizer_stage_", "anonymizer_network_")):
                label = sample.labels.get("stage") or sample.labels.get("network") or ""
                values[(sample.name, label)] = sample.value
    return values


@dataclass
class Budget:
    """Counters of both services at one moment, or their difference over a pass."""

    api: dict[tuple[str, str], float] = field(default_factory=dict)
    server: dict[tuple[str, str], float] = field(default_factory=dict)

    @classmethod
    def read(cls, api_url: str, server_url: str) -> "Budget":
        return cls(_scrape(api_url), _scrape(server_url))

    def since(self, earlier: "Budget") -> "Budget":
        def minus(now: dict, then: dict) -> dict:
            return {key: value - then.get(key, 0.0) for key, value in now.items()}

        return Budget(minus(self.api, earlier.api), minus(self.server, earlier.server))

    def stage_ms(self, name: str, per: int) -> float | None:
        source = self.server if name.startswith("server ") else self.api
        seconds = source.get((f"{SECONDS_METRIC}_total", name))
        return None if not seconds else seconds * 1000 / per

    def networks_ms(self, per: int) -> dict[str, float]:
        return {
            network: seconds * 1000 / per
            for (name, network), seconds in sorted(self.server.items())
            if name == "anonymizer_network_seconds_total" and seconds > 0
        }

    def shapes_prepared(self) -> dict[str, int]:
        return {
            network: int(count)
            for (name, network), count in sorted(self.server.items())
            if name == "anonymizer_network_shapes_prepared_total" and count > 0
        }

    def table(self, items: int, wall_seconds: float, unit: str = "image") -> str:
        """The budget per `unit` in ms: each stage, inside `detect` the server's stages and networks,
        the transfer (what `detect` took beyond the server's own stages) and what no stage accounts for."""
        lines = [f"per-stage budget, ms per {unit} (mean of {items}):"]
        accounted = 0.0
        for name in API_STAGES:
            ms = self.stage_ms(name, items)
            if ms is None:
                continue
            accounted += ms
            lines.append(f"  {name:<34}{ms:>8.1f}")
            if name != "detect":
                continue
            server = 0.0
            for inner in SERVER_STAGES:
                inner_ms = self.stage_ms(inner, items)
                if inner_ms is not None:
                    server += inner_ms
                    lines.append(f"    {inner:<32}{inner_ms:>8.1f}")
                if inner == "server model":
                    for network, network_ms in self.networks_ms(items).items():
                        lines.append(f"      network {network:<24}{network_ms:>8.1f}")
            lines.append(f"    {'transfer and (de)serialisation':<32}{ms - server:>8.1f}")
        wall = wall_seconds * 1000 / items
        lines.append(f"  {'wall (client, HTTP, overlap)':<34}{wall:>8.1f}  (stages above: {accounted:.1f})")
        prepared = self.shapes_prepared()
        if prepared:
            lines.append(
                "  input shapes prepared during the pass: " + ", ".join(f"{k} {v}" for k, v in prepared.items())
            )
        return "\n".join(lines)

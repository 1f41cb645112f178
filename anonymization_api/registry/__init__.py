"""The registry of inference servers (`store`), what it knows of each (`servers`) and how it
finds that out (`discovery`)."""

from anonymization_api.registry.servers import ModelInfo, Protocol, ServerInfo, normalise_url, parse_given
from anonymization_api.registry.store import Registry

__all__ = ["ModelInfo", "Protocol", "Registry", "ServerInfo", "normalise_url", "parse_given"]

"""The registry of inference servers (`store`), what it knows of each (`servers`), how it
finds that out (`discovery`) and which addresses it accepts (`url_policy`)."""

from anonymization_api.registry.servers import ModelInfo, Protocol, ServerInfo, parse_given
from anonymization_api.registry.store import Registry
from anonymization_api.registry.url_policy import UrlPolicy, normalise_url

__all__ = ["ModelInfo", "Protocol", "Registry", "ServerInfo", "UrlPolicy", "normalise_url", "parse_given"]

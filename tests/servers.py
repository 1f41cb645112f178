"""Our real servers on loopback ports, for the integration tests."""

from anonymization_api.processes import free_port, running
from inference_common.models import PROJECT_ROOT

__all__ = ["PROJECT_ROOT", "free_port", "running"]

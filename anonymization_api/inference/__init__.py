"""Calls to inference servers. `InferenceRouter` (the one entry point the pipelines use) picks the
replica, retries, fails over and marks health; `oip` and `bmw` speak the two protocols;
`shared_frames` hands images over through shared memory on this host."""

from anonymization_api.inference.router import InferenceRouter

__all__ = ["InferenceRouter"]

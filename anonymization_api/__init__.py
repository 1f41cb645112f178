"""The anonymisation service: registry of inference servers, techniques, image and video pipelines."""

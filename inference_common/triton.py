"""`anonymizer triton-repo OUT_DIR`: a Triton model repository for every bundled model."""

import argparse


def add_command(commands: argparse._SubParsersAction) -> None:
    """Register `triton-repo` on the CLI (filled in by the Triton work)."""

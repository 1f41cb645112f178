"""`anonymizer run`: anonymise images, videos and folders through a running API."""

import argparse


def add_command(commands: argparse._SubParsersAction) -> None:
    """Register `run` on the CLI."""

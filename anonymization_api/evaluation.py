"""`anonymizer eval`: privacy quality of the running service on an annotated data set."""

import argparse


def add_command(commands: argparse._SubParsersAction) -> None:
    """Register `eval` on the CLI (filled in by the evaluation work)."""

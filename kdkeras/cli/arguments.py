"""Argument types shared by the `kdkeras` subcommands."""

import argparse

__all__ = ["positive_int"]


def positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1. Received: {text!r}")
    return value

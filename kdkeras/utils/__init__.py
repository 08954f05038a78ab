"""Helpers every part may use: atomic writes, the table formatter, Keras internals.

Imports nothing else from kdkeras.
"""

__all__ = ["atomic", "keras_compat", "tables"]

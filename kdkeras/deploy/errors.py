"""The errors of the deployment stage."""

__all__ = ["ConversionError", "ParityError"]


class ParityError(RuntimeError):
    """An exported artifact does not match its Keras model.

    Attributes:
        report: the parity figures (a `dict`), also written to the manifest.
    """

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = {"passed": False, **(report or {})}


class ConversionError(RuntimeError):
    """A model could not be converted to the requested format.

    Raised when a converter leaves operations it does not know in the
    artifact (it would fail at load time in its runtime). The message names
    the operations and suggests the formats that do work.
    """

"""kdkeras: knowledge distillation for Keras."""

from kdkeras import datasets

__version__ = "0.1.0"

__all__ = sorted(
    [
        "__version__",
        "datasets",
    ]
)

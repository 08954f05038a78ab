"""Adapters: learned maps from a student's tapped features to the teacher's shape."""


def build_adapters(distiller):
    """One adapter layer (or `None`) per distillation term of `distiller`.

    A term carrying an `adapter` attribute that is a Keras layer gets that
    layer; every other term gets `None` (features compared as they are).
    """
    built = []
    for term in distiller.distillation_losses:
        built.append(getattr(term, "adapter", None))
    return built

"""Exceptions raised by sklat beyond the built-in ``ValueError``/``TypeError``."""


class TrainingDivergedError(FloatingPointError):
    """The training loss stopped being finite; the message names the likely cause."""


class ModelFileError(ValueError):
    """A model file that cannot be loaded: not a sklat model, damaged, or from
    an incompatible version."""


class ExtrapolationWarning(UserWarning):
    """A prediction for a configuration or output length outside the training
    range: the message names the feature, the value and the range."""


class BenchmarkFormatError(ValueError):
    """A serving-benchmark file that cannot be imported: names the file, the key
    and the request (or line) at fault, or the formats considered."""

"""Exceptions raised by sklat beyond the built-in ``ValueError``/``TypeError``."""


class TrainingDivergedError(FloatingPointError):
    """The training loss stopped being finite; the message names the likely cause."""


class ModelFileError(ValueError):
    """A model file that cannot be loaded: not a sklat model, damaged, or from
    an incompatible version."""


class ExtrapolationWarning(UserWarning):
    """A prediction for a configuration or output length outside the training
    range: the message names the feature, the value and the range."""

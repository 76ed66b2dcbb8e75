"""What a running service is told: the model, where observations go, how it
updates itself, and the limits it holds hostile requests to."""

import dataclasses
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class ServeSettings:
    """Settings of :func:`sklat.serve.create_app` (and ``sklat serve``).

    Parameters
    ----------
    model : path
        A model file, or a ``sklat train`` output folder holding
        ``model.safetensors``.
    observations : path, default=None
        Folder of the observations the service receives (a results folder
        that ``sklat train`` reads: dataset ``served``) and of the model
        versions it makes (``models/``). ``None``: no ``/v1/observations``
        and no online updates.
    token : str, default=None
        Bearer token every ``/v1`` call must send; ``None``: none needed.
    update_every : int, default=25
        Observations between two online updates (recalibration, drift
        check and, where drift persists, a refit).
    window : int, default=200
        The last observations an update uses.
    drift_alpha : float, default=0.01
        p-value under which a drift check finds drift.
    drift_patience : int, default=3
        Consecutive drift findings after which the model is refitted on
        the window.
    max_rows : int, default=10000
        Most rows (or candidates) in one call.
    max_body_bytes : int, default=4194304
        Largest request body.
    """

    model: Path
    observations: Path | None = None
    token: str | None = None
    update_every: int = 25
    window: int = 200
    drift_alpha: float = 0.01
    drift_patience: int = 3
    max_rows: int = 10_000
    max_body_bytes: int = 4 * 2**20

    def __post_init__(self):
        object.__setattr__(self, "model", Path(self.model))
        if self.observations is not None:
            object.__setattr__(self, "observations", Path(self.observations))
        for name, low in (
            ("update_every", 1),
            ("window", 20),
            ("drift_patience", 1),
            ("max_rows", 1),
            ("max_body_bytes", 1024),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}; got {value!r}.")
        if not 0 < self.drift_alpha < 1:
            raise ValueError(f"drift_alpha must be in (0, 1); got {self.drift_alpha!r}.")
        if self.token is not None and not self.token:
            raise ValueError("the token is empty.")

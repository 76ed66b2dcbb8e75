"""What a user would pick instead of sklat, written as small regressors.

Each peer has ``fit(X, y, output_tokens, positioned_latencies)`` (X a DataFrame
of configuration features, y ``[T_prefill_total, T_LLM_decode]``) and
``predict_positions(X, positions)``, ``predict_total(X, output_tokens)``,
``predict_prefill(X)``.
"""

import itertools

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import RidgeCV
from sklearn.preprocessing import StandardScaler


def _config_matrix(X):
    """Config features on a log scale where they span orders of magnitude."""
    arr = np.asarray(X, dtype=np.float64)
    ratio = (arr.max(axis=0) + 1) / (arr.min(axis=0) + 1)
    return arr, (arr >= 0).all(axis=0) & (ratio >= 10)


def _log_where(arr, mask):
    out = arr.copy()
    out[:, mask] = np.log1p(out[:, mask])
    return out


class _PrefillGBM:
    def _fit_prefill(self, X, y):
        self.prefill_ = HistGradientBoostingRegressor(random_state=0).fit(
            X, np.log(np.asarray(y)[:, 0])
        )

    def predict_prefill(self, X):
        return np.exp(self.prefill_.predict(X))


class FlatAverage(_PrefillGBM):
    """The status quo: a regressor of the mean per-token latency; flat curve."""

    def fit(self, X, y, output_tokens, positioned_latencies=None):
        avg = np.asarray(y)[:, 1] / output_tokens
        self.model_ = HistGradientBoostingRegressor(random_state=0).fit(X, np.log(avg))
        self._fit_prefill(X, y)
        return self

    def predict_positions(self, X, positions):
        avg = np.exp(self.model_.predict(X))
        return np.repeat(avg[:, None], len(positions), axis=1)

    def predict_total(self, X, output_tokens):
        return np.exp(self.model_.predict(X)) * output_tokens


class TotalGBM(_PrefillGBM):
    """Gradient boosting on (config, N) -> total; per position S(N) - S(N-1)."""

    def fit(self, X, y, output_tokens, positioned_latencies=None):
        Z = np.column_stack([np.asarray(X, dtype=np.float64), output_tokens])
        self.model_ = HistGradientBoostingRegressor(random_state=0).fit(Z, np.asarray(y)[:, 1])
        self._fit_prefill(X, y)
        return self

    def _totals(self, X, n):
        Z = np.column_stack([np.asarray(X, dtype=np.float64), n])
        return np.where(n > 0, self.model_.predict(Z), 0.0)

    def predict_positions(self, X, positions):
        out = np.empty((len(X), len(positions)))
        for j, p in enumerate(positions):
            n = np.full(len(X), p)
            out[:, j] = self._totals(X, n) - self._totals(X, n - 1)
        return out

    def predict_total(self, X, output_tokens):
        return self._totals(X, np.asarray(output_tokens))


def _position_basis(p, scale):
    """Simple position basis functions b_k(p)."""
    p = np.asarray(p, dtype=np.float64)
    return np.column_stack(
        [
            np.ones_like(p),
            np.log1p(p) / np.log1p(scale),
            p / scale,
            np.exp(-(p - 1) / 4.0),
            np.exp(-(p - 1) / 16.0),
        ]
    )


def _raw_products(arr, order=3):
    """The raw features and their products of up to ``order`` distinct features
    (layers x experts, layers x context, ...): physical cost terms."""
    cols = [
        arr[:, list(idx)].prod(axis=1)
        for k in range(1, order + 1)
        for idx in itertools.combinations(range(arr.shape[1]), k)
    ]
    return np.column_stack(cols)


class AggregatedLinear(_PrefillGBM):
    """Closed form: f(c, p) = sum_jk w_jk a_j(c) b_k(p), ridge on summed basis.

    ``config_basis="log"``: ``a`` = 1 and the standardised (log-)features;
    ``"products"``: 1 and the standardised raw features with their products of
    up to three features (the hand-made interactions of a physical model).
    """

    def __init__(self, config_basis="log"):
        self.config_basis = config_basis

    def _config_features(self, X):
        arr = np.asarray(X, dtype=np.float64)
        if self.config_basis == "products":
            return _raw_products(arr)
        return _log_where(arr, self.log_mask_)

    def fit(self, X, y, output_tokens, positioned_latencies=None):
        arr, self.log_mask_ = _config_matrix(X)
        self.scaler_ = StandardScaler().fit(self._config_features(X))
        self.scale_ = float(np.max(output_tokens))
        n = np.asarray(output_tokens)
        cumulative = np.cumsum(_position_basis(np.arange(1, n.max() + 1), self.scale_), axis=0)
        design = self._design(X, cumulative[n - 1])
        # Relative error: divide each row by its total, as sklat's loss does.
        t = np.asarray(y)[:, 1]
        self.model_ = RidgeCV(alphas=np.logspace(-6, 2, 17), fit_intercept=False).fit(
            design / t[:, None], np.ones_like(t)
        )
        self._fit_prefill(X, y)
        return self

    def _config_basis(self, X):
        a = self.scaler_.transform(self._config_features(X))
        return np.column_stack([np.ones(len(a)), a])

    def _design(self, X, b):
        a = self._config_basis(X)
        return (a[:, :, None] * b[:, None, :]).reshape(len(a), -1)

    def predict_positions(self, X, positions):
        b = _position_basis(positions, self.scale_)
        a = self._config_basis(X)
        return a @ self.model_.coef_.reshape(a.shape[1], b.shape[1]) @ b.T

    def predict_total(self, X, output_tokens):
        n = np.asarray(output_tokens)
        cumulative = np.cumsum(_position_basis(np.arange(1, n.max() + 1), self.scale_), axis=0)
        return self.model_.predict(self._design(X, cumulative[n - 1]))


class PerStepOracle(_PrefillGBM):
    """Gradient boosting on (config, position) fitted to every measured step:
    what direct per-step supervision achieves (the noise floor)."""

    def fit(self, X, y, output_tokens, positioned_latencies):
        arr = np.asarray(X, dtype=np.float64)
        rows = np.repeat(np.arange(len(arr)), output_tokens)
        starts = np.repeat(np.cumsum(output_tokens) - output_tokens, output_tokens)
        pos = np.arange(len(rows)) - starts + 1
        steps = np.concatenate(positioned_latencies)
        self.model_ = HistGradientBoostingRegressor(random_state=0, max_iter=300).fit(
            np.column_stack([arr[rows], np.log(pos)]), np.log(steps)
        )
        self._fit_prefill(X, y)
        return self

    def predict_positions(self, X, positions):
        arr = np.asarray(X, dtype=np.float64)
        p = np.asarray(positions, dtype=np.float64)
        Z = np.column_stack([np.repeat(arr, len(p), axis=0), np.tile(np.log(p), len(arr))])
        return np.exp(self.model_.predict(Z)).reshape(len(arr), len(p))

    def predict_total(self, X, output_tokens):
        n = np.asarray(output_tokens)
        full = self.predict_positions(X, np.arange(1, n.max() + 1))
        mask = np.arange(1, n.max() + 1)[None, :] <= n[:, None]
        return (full * mask).sum(axis=1)


class PhysicalCore(_PrefillGBM):
    """A ten-parameter physical model fitted on totals: one power law of the
    (log) features times a flat cost, a context cost and a start-up transient::

        f(c, p) = exp(w0 + w . log x) * (1 + exp(b) (context_0 + p) / S
                                        + exp(g) exp(-(p - 1) / 4))

    ``context_0`` is the sum of ``context_features`` (columns of ``X``), ``S``
    the median of ``context_0 + N``. Least squares of log totals (the sums over
    ``1..N`` are closed form).
    """

    def __init__(self, context_features=("vision_tokens", "text_tokens")):
        self.context_features = context_features

    def _parts(self, X, n):
        arr = np.asarray(X, dtype=np.float64)
        logx = np.log1p(arr)
        names = list(getattr(X, "columns", []))
        cols = [names.index(c) for c in self.context_features if c in names]
        context = arr[:, cols].sum(axis=1) if cols else np.zeros(len(arr))
        return logx, context, np.asarray(n, dtype=np.float64)

    @staticmethod
    def _sums(context, n, scale):
        transient = (1 - np.exp(-n / 4)) / (1 - np.exp(-1 / 4))
        return n, (n * context + n * (n + 1) / 2) / scale, transient

    def fit(self, X, y, output_tokens, positioned_latencies=None):
        from scipy.optimize import least_squares

        logx, context, n = self._parts(X, output_tokens)
        self.scale_ = float(max(1.0, np.median(context + n)))
        flat, ctx, transient = self._sums(context, n, self.scale_)
        target = np.log(np.asarray(y)[:, 1])

        def residuals(params):
            w0, w, b, g = params[0], params[1:-2], params[-2], params[-1]
            inner = flat + np.exp(b) * ctx + np.exp(g) * transient
            return target - (w0 + logx @ w + np.log(inner))

        start = np.zeros(logx.shape[1] + 3)
        start[0] = float(np.mean(target - np.log(n)))
        start[-2:] = -2.0
        self.params_ = least_squares(residuals, start).x
        self._fit_prefill(X, y)
        return self

    def _power(self, X):
        logx, _, _ = self._parts(X, np.ones(len(X)))
        return np.exp(self.params_[0] + logx @ self.params_[1:-2])

    def predict_positions(self, X, positions):
        _, context, _ = self._parts(X, np.ones(len(X)))
        p = np.asarray(positions, dtype=np.float64)[None, :]
        b, g = np.exp(self.params_[-2:])
        curve = 1 + b * (context[:, None] + p) / self.scale_ + g * np.exp(-(p - 1) / 4)
        return self._power(X)[:, None] * curve

    def predict_total(self, X, output_tokens):
        _, context, n = self._parts(X, output_tokens)
        flat, ctx, transient = self._sums(context, n, self.scale_)
        b, g = np.exp(self.params_[-2:])
        return self._power(X) * (flat + b * ctx + g * transient)


class RelativePoint:
    """A peer whose decode predictions are multiplied by the factor with the
    least mean relative error on its own training totals
    (``sklat._conformal.relative_error_factor``): the point sklat predicts
    with ``point="relative"``, given to a model of a few parameters, whose
    training errors are close to out-of-sample ones."""

    def __init__(self, peer):
        self.peer = peer

    def fit(self, X, y, output_tokens, positioned_latencies=None):
        from sklat._conformal import relative_error_factor

        self.peer.fit(X, y, output_tokens, positioned_latencies)
        predicted = self.peer.predict_total(X, output_tokens)
        self.factor_ = relative_error_factor(np.log(np.asarray(y)[:, 1] / predicted))
        return self

    def predict_positions(self, X, positions):
        return self.factor_ * self.peer.predict_positions(X, positions)

    def predict_total(self, X, output_tokens):
        return self.factor_ * self.peer.predict_total(X, output_tokens)

    def predict_prefill(self, X):
        return self.peer.predict_prefill(X)

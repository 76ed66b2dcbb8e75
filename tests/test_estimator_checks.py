"""scikit-learn's own estimator checks."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from sklat import LatencyEstimator

# check_estimator's data carries no output lengths, so each row is taken as a
# one-token request; 20 epochs keep the suite fast and still score R² > 0.5.
ESTIMATOR = LatencyEstimator(default_output_tokens=1, max_epochs=20, random_state=0)


@parametrize_with_checks([ESTIMATOR])
def test_sklearn_compatible(estimator, check):
    check(estimator)

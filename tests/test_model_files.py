"""Edited model files: every inconsistency is a ModelFileError, raised before
anything of the claimed size is built.

"Edited" means the JSON metadata (or a tensor) of a file written by
``sklat.save`` was changed and the digest recomputed, which anyone can do.
"""

import json
import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import sklat
from sklat.persistence import ModelFileError, _digest


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, fitted):
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    sklat.save(fitted, path)
    return path


def _parts(path):
    tensors = load_file(path)
    with safe_open(path, framework="pt") as f:
        body = f.metadata()["sklat"]
    return json.loads(body), tensors


def _write(path, doc_or_body, tensors):
    body = doc_or_body if isinstance(doc_or_body, str) else json.dumps(doc_or_body)
    save_file(tensors, path, metadata={"sklat": body, "sha256": _digest(body, tensors)})


def _edited(model_file, tmp_path, edit_doc=None, edit_tensors=None):
    doc, tensors = _parts(model_file)
    if edit_doc is not None:
        result = edit_doc(doc)  # edits in place, or returns a whole replacement list
        doc = result if isinstance(result, list) else doc
    if edit_tensors is not None:
        edit_tensors(tensors)
    path = tmp_path / "edited.safetensors"
    _write(path, doc, tensors)
    return path


def _attr(name, value):
    def edit(doc):
        doc["attributes"][name] = value

    return edit


def _param(name, value):
    def edit(doc):
        doc["params"][name] = value

    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (_attr("step_scale_", -1), r"attribute step_scale_ must be a finite number >= 1e-300"),
        (_attr("feature_scale_", [0.0] * 5), "attribute feature_scale_ must be > 0"),
        (_attr("feature_mean_", [1.0] * 4), "attribute feature_mean_ must be a flat list of 5"),
        (_attr("feature_log_shift_", [0.5] * 5), "must hold 0 or 1"),
        (_attr("context_features_", [9]), "context_features_ must be distinct feature indices"),
        (_attr("n_outputs_", 1), "n_outputs_ and prefill_scale_ disagree"),
        (_attr("max_output_tokens_", 10**12), "max_output_tokens_ must be an integer >= 1 <= "),
        (
            _attr("output_tokens_distribution_", {"values": [3 * 10**7], "probabilities": [1.0]}),
            r"must be <= 1048576",
        ),
        (_attr("output_tokens_distribution_", [1, 2]), "must be a JSON object"),
        (_attr("feature_names_in_", ["a"]), "feature_names_in_ must be a list of 5 names"),
        (_attr("n_features_in_", True), "n_features_in_ must be an integer"),
        (lambda doc: doc["attributes"].pop("total_norm_"), r"attributes missing \['total_norm_'\]"),
        (_attr("extra_", 1), r"unknown \['extra_'\]"),
        (
            _attr("feature_range_", [[9.0] * 5, [1.0] * 5]),
            "feature_range_ must hold a minimum <= maximum",
        ),
        (
            _attr("conformity_scores_", [[0.1]]),
            "conformity_scores_ must be nested lists of any number of x 2 numbers",
        ),
        (_attr("conformity_scores_", [[0.1, 1e309]]), "conformity_scores_ must be finite"),
        (_attr("position_scores_", [[0.1, 0.0]]), "position_scores_ must hold absolute errors"),
        (_attr("position_scores_", [[-0.1, 0.5]]), "position_scores_ must hold absolute errors"),
        (
            _attr("difficulty_tree_", [[[0.0] * 15] * 3]),
            "difficulty_tree_ must be nested lists of 2",
        ),
        (
            _attr("difficulty_tree_", [[[7.0] * 15, [0.0] * 15, [0.0] * 15]] * 2),
            r"difficulty_tree_ must name inputs in -1\.\.5",
        ),
        (_attr("cost_scales_", [1.0, 0.0, 1.0]), "cost_scales_ must be a list of finite numbers"),
        (_attr("cost_scales_", [1.0]), "cost_scales_ must be a list of finite numbers"),
        (_attr("point_factors_", [0.9]), "point_factors_ must be a list of 2 finite numbers"),
        (
            _attr("scale_slopes_", [[0.0] * 5]),
            "scale_slopes_ must be nested lists of 2 x 5 numbers",
        ),
        (_attr("scale_slopes_", [[0.0] * 5, [1e309] + [0.0] * 4]), "scale_slopes_ must be finite"),
        (_attr("load_features_", "2"), "load_features_ must be a list of feature indices"),
        (_attr("load_features_", [9]), r"load_features_ must be distinct .* in 0\.\.4"),
        (_attr("load_features_", [2, 2]), "load_features_ must be distinct feature indices"),
        (_attr("load_features_", [1]), "none of them a context feature"),
        (_param("point", "mean"), r"'point' parameter of LatencyEstimator must be"),
        (_param("surprise", 1), "the parameters must be exactly"),
        (lambda doc: doc["params"].pop("lr"), "the parameters must be exactly"),
        (_param("hidden_size", -1), r"'hidden_size' .* an int in the range \[1, 4096\]. Got -1"),
        (_param("hidden_size", True), r"'hidden_size' .* Got True"),
        (
            _param("hidden_size", 20000),
            r"'hidden_size' .* an int in the range \[1, 4096\]. Got 20000",
        ),
        (
            _param("hidden_size", 32),
            r"weight (member\d+\.)?module\..* has shape .* the parameters imply",
        ),
        (_param("verbose", "x"), r"'verbose' .* an int in the range \[0, inf\). Got 'x'"),
        (
            lambda doc: doc.update(history=7),
            r"histories must be a list of 5 lists of JSON objects \(one per net\)",
        ),
        (lambda doc: [1, 2], "the metadata must be a JSON object, not list"),
        (lambda doc: doc.pop("attributes"), r"the metadata lacks \['attributes'\]"),
    ],
)
def test_edited_metadata_is_refused(model_file, tmp_path, edit, message):
    path = _edited(model_file, tmp_path, edit_doc=edit)
    with pytest.raises(ModelFileError, match=message):
        sklat.load(path)


def test_deeply_nested_metadata_is_refused_without_recursion(model_file, tmp_path):
    _, tensors = _parts(model_file)
    path = tmp_path / "deep.safetensors"
    _write(path, "[" * 100_000 + "]" * 100_000, tensors)
    with pytest.raises(ModelFileError, match="nested deeper than 32 levels"):
        sklat.load(path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda t: t["module.config_linear.weight"].fill_(float("nan")),
            r"weight module.config_linear.weight holds NaN or inf",
        ),
        (
            lambda t: t.update(
                {"module.config_linear.weight": t["module.config_linear.weight"].to(torch.bfloat16)}
            ),
            r"is torch.bfloat16; sklat writes float32",
        ),
        (
            lambda t: t["module.linear_mask"].fill_(1.0),
            r"weight module.linear_mask disagrees with the fitted attributes",
        ),
        (
            lambda t: t["module.position_scale"].fill_(3.0),
            r"weight module.position_scale disagrees",
        ),
    ],
)
def test_edited_weights_are_refused(model_file, tmp_path, edit, message):
    path = _edited(model_file, tmp_path, edit_tensors=edit)
    with pytest.raises(ModelFileError, match=message):
        sklat.load(path)


def test_a_loaded_model_is_sound(model_file, small_data):
    est = sklat.load(model_file)
    assert (est.predict_total(small_data.X, 7) > 0).all()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(section=st.sampled_from(["params", "attributes"]), data=st.data(), value=json_values)
def test_any_edit_loads_soundly_or_is_a_model_file_error(
    model_file, small_data, tmp_path, section, data, value
):
    doc, tensors = _parts(model_file)
    key = data.draw(st.sampled_from(sorted(doc[section])))
    doc[section][key] = value
    path = tmp_path / "fuzz.safetensors"
    _write(path, doc, tensors)
    try:
        est = sklat.load(path)
    except ModelFileError:
        return
    # Accepted edits (e.g. a parameter that only matters for a refit) must
    # still give finite, positive predictions.
    pred = est.predict_total(small_data.X.iloc[:5], 9)
    assert np.isfinite(pred).all() and (pred > 0).all()
    # Intervals are finite and positive, or a clear error (an edited file may
    # hold no calibration requests, or scores that overflow).
    try:
        bounds = est.predict_interval(small_data.X.iloc[:5], 9, confidence=0.5)
    except ValueError as exc:
        assert re.search("calibration requests|is not finite", str(exc))
        return
    assert np.isfinite(bounds).all() and (bounds > 0).all()

"""Safe model files: round trip, CUDA -> CPU, and hostile files."""

import json
import os
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import sklat
from sklat.persistence import FORMAT_VERSION, ModelFileError, _digest


@pytest.fixture
def saved(fitted, tmp_path):
    path = tmp_path / "model.safetensors"
    sklat.save(fitted, path)
    return path


def test_round_trip_identical_predictions(fitted, small_data, saved):
    loaded = sklat.load(saved)
    X = small_data.X
    np.testing.assert_array_equal(
        loaded.predict(X, output_tokens=33), fitted.predict(X, output_tokens=33)
    )
    np.testing.assert_array_equal(
        loaded.predict_positions(X, [1, 2, 999]), fitted.predict_positions(X, [1, 2, 999])
    )
    np.testing.assert_array_equal(
        loaded.predict_budget(X, "expectation"), fitted.predict_budget(X, "expectation")
    )
    for target in ("total", "prefill"):
        np.testing.assert_array_equal(
            loaded.predict_interval(X, 33, target=target),
            fitted.predict_interval(X, 33, target=target),
        )
    np.testing.assert_array_equal(
        loaded.predict_slo_attainment(X, ttft_ms=20.0, tpot_ms=2.0),
        fitted.predict_slo_attainment(X, ttft_ms=20.0, tpot_ms=2.0),
    )
    np.testing.assert_array_equal(loaded.in_domain(X), fitted.in_domain(X))
    assert loaded.get_params() == fitted.get_params()
    assert list(loaded.feature_names_in_) == list(fitted.feature_names_in_)
    assert len(loaded.history_) == len(fitted.history_)
    assert loaded.history_[-1, "train_loss"] == fitted.history_[-1, "train_loss"]


def test_1d_model_round_trip(fitted_1d, small_data, tmp_path):
    path = tmp_path / "m.safetensors"
    sklat.save(fitted_1d, path)
    loaded = sklat.load(path)
    assert loaded.prefill_scale_ is None
    np.testing.assert_array_equal(
        loaded.predict(small_data.X, output_tokens=5),
        fitted_1d.predict(small_data.X, output_tokens=5),
    )


def test_cuda_trained_model_loads_on_cpu(fitted, small_data, tmp_path, monkeypatch):
    monkeypatch.setattr(fitted, "device_", "cuda")
    path = tmp_path / "cuda.safetensors"
    sklat.save(fitted, path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loaded = sklat.load(path, device="auto")
    assert loaded.device_ == "cpu"
    np.testing.assert_array_equal(
        loaded.predict_total(small_data.X, 3), fitted.predict_total(small_data.X, 3)
    )
    with pytest.raises(ValueError, match="CUDA is not available"):
        sklat.load(path, device="cuda")


def test_pickle_renamed_as_model_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ModelFileError, match="is not a readable sklat model file"):
        sklat.load(path)
    assert not marker.exists()


def test_truncated_file(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="is not a readable sklat model file"):
        sklat.load(saved)


def test_tampered_weights(saved):
    data = bytearray(saved.read_bytes())
    data[-5] ^= 0xFF
    saved.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="failed its integrity check"):
        sklat.load(saved)


def _rewrite(path, edit):
    from safetensors import safe_open
    from safetensors.torch import load_file

    tensors = load_file(path)
    with safe_open(path, framework="pt") as f:
        doc = json.loads(f.metadata()["sklat"])
    edit(doc)
    body = json.dumps(doc)
    save_file(tensors, path, metadata={"sklat": body, "sha256": _digest(body, tensors)})


def test_incompatible_format_version(saved):
    _rewrite(saved, lambda doc: doc.update(format_version=99))
    expected = f"format version 99 .* reads versions 5, 6, 7, {FORMAT_VERSION}"
    with pytest.raises(ModelFileError, match=expected):
        sklat.load(saved)


def test_other_format(saved):
    _rewrite(saved, lambda doc: doc.update(format="something-else"))
    with pytest.raises(ModelFileError, match="holds 'something-else'"):
        sklat.load(saved)


def test_plain_safetensors_file(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(2)}, os.fspath(path))
    with pytest.raises(ModelFileError, match="not a sklat model"):
        sklat.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        sklat.load(tmp_path / "nope.safetensors")


def test_a_train_output_folder_loads_as_its_model_file(fitted, small_data, saved):
    # sklat.load took only a file ("No such device"), where the commands and
    # the service take a sklat train output folder too.
    loaded = sklat.load(saved.parent)
    X = small_data.X
    np.testing.assert_array_equal(loaded.predict(X, 10), fitted.predict(X, 10))
    empty = saved.parent / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="empty is a folder without a model.safetensors"):
        sklat.load(empty)


def test_save_names_a_path_it_cannot_write(fitted, tmp_path, monkeypatch):
    with pytest.raises(IsADirectoryError, match="is a folder: give the file to write"):
        sklat.save(fitted, tmp_path)
    with pytest.raises(FileNotFoundError, match="the folder .*nowhere of the model file"):
        sklat.save(fitted, tmp_path / "nowhere" / "m.safetensors")

    # A disk that fills up: safetensors raises its own error, which is an
    # OSError for the caller (and the commands' one-line message).
    def full(*args, **kwargs):
        from safetensors import SafetensorError

        raise SafetensorError("Error while serializing: I/O error: No space left on device")

    monkeypatch.setattr(sklat.persistence, "save_file", full)
    with pytest.raises(OSError, match="cannot write the model file .*No space left on device"):
        sklat.save(fitted, tmp_path / "m.safetensors")


def test_save_unfitted():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        sklat.save(sklat.LatencyEstimator(), "x.safetensors")


def test_unreadable_metadata(saved):
    from safetensors.torch import load_file

    tensors = load_file(saved)
    body = "{not json"
    save_file(tensors, saved, metadata={"sklat": body, "sha256": _digest(body, tensors)})
    with pytest.raises(ModelFileError, match="has unreadable metadata"):
        sklat.load(saved)


def test_weights_that_do_not_fit(saved):
    from safetensors import safe_open
    from safetensors.torch import load_file

    tensors = load_file(saved)
    with safe_open(saved, framework="pt") as f:
        body = f.metadata()["sklat"]
    tensors.pop("module.config_linear.bias")
    save_file(tensors, saved, metadata={"sklat": body, "sha256": _digest(body, tensors)})
    with pytest.raises(
        ModelFileError,
        match=r"the weights do not fit the model: missing \[.module.config_linear.bias.\]",
    ):
        sklat.load(saved)

"""Reading and writing of the ``sklat`` commands that use a trained model:
the model, a configurations file, an output file."""

from .._constants import OUTPUT_TOKENS_COL
from ..io import (
    check_values,
    demo_results_dir,
    discover_datasets,
    load_results,
    read_table,
)


def load_model(path, device="cpu"):
    """The model of ``path``: a model file, or a ``sklat train`` output folder
    holding ``model.safetensors``."""
    # The model (torch, skorch) loads only for the commands that use one, so that
    # `sklat --help` and the measuring commands stay light.
    from ..persistence import load

    return load(path, device=device)


def check_output_file(path):
    """Refuse an ``--output`` that cannot be written, before any work."""
    if path is None:
        return
    if path.is_dir():
        raise ValueError(f"--output {path} is a folder; give a file name.")
    if not path.parent.is_dir():
        raise ValueError(f"--output {path}: the folder {path.parent} does not exist.")


def columns_at_load(est, load, what):
    """``(names, advice, refused)``: the model's feature columns a
    configurations file holds; advice for a missing load column; and the
    columns it must not hold. With ``--load`` (``load``) the load columns
    it gives are left out, and a file that holds one is refused (the
    estimator refuses a load given twice; here ``--load`` would replace the
    file's values unseen); without it, their absence is explained (``what``:
    what the load is for, e.g. "every candidate is decided at")."""
    from .._load_input import load_values

    names = list(getattr(est, "feature_names_in_", []))
    if load is not None:
        given = load_values(est, load)
        refused = {
            names[col]: f"column {names[col]!r} is a load that --load gives too; give each "
            "load once: leave the column out of the file, or --load out."
            for col in given
        }
        return [name for i, name in enumerate(names) if i not in given], {}, refused
    advice = {
        names[col]: f"no load column {names[col]!r}; give the load {what} with --load "
        f"(e.g. --load {names[col]}=8), or as a column."
        for col in getattr(est, "load_features_", [])
    }
    return names, advice, {}


def read_configs(path, names, extra=(), advice=None, refused=None):
    """The configurations of ``path`` as the model's features (and the
    ``extra`` columns), checked with rows counted from 1; and their
    output_tokens column, if any. ``advice``: ``{column: message}`` for a
    missing column that a command can say more about; ``refused``:
    ``{column: message}`` for a column the file must not hold (a value the
    command sets itself, which would otherwise replace the file's)."""

    frame = read_table(path)
    if frame.empty:
        raise ValueError(f"{path}: no rows.")
    held = [c for c in (refused or {}) if c in frame.columns]
    if held:
        raise ValueError(f"{path}: {refused[held[0]]}")
    missing = [c for c in names if c not in frame.columns]
    advised = [c for c in missing if c in (advice or {})]
    if advised:
        raise ValueError(f"{path}: {advice[advised[0]]}")
    if missing:
        raise ValueError(
            f"{path}: missing feature column(s) {missing}; the model was trained on {names}."
        )
    absent = [c for c in extra if c not in frame.columns]
    if absent:
        raise ValueError(f"{path}: no column {absent[0]!r} (columns: {list(frame.columns)}).")
    X = frame[names] if names else frame
    checked = list(dict.fromkeys([*X.columns, *[c for c in (OUTPUT_TOKENS_COL,) if c in frame]]))
    # Checked on a copy: the printed features keep the file's own values.
    values = frame[checked].copy()
    check_values(values, path, checked)
    n = values[OUTPUT_TOKENS_COL].to_numpy() if OUTPUT_TOKENS_COL in values else None
    if extra and names:
        X = frame[list(dict.fromkeys([*names, *extra]))]
    return X, n


def select_datasets(args):
    """``(results_dir, datasets or None)`` of a command's ``--results_dir``,
    ``--datasets`` and ``--use_all_datasets``."""

    if args.results_dir is None:
        return demo_results_dir(), None
    if args.datasets is not None:
        return args.results_dir, args.datasets
    found = discover_datasets(args.results_dir)
    if len(found) > 1 and not args.use_all_datasets:
        raise ValueError(
            f"{args.results_dir} holds several datasets {sorted(found)}: pass "
            "--use_all_datasets or --datasets a,b."
        )
    return args.results_dir, None


def measured_results(est, args):
    """``(results_dir, results, y)``: the results of a command's
    ``--results_dir`` (see :func:`select_datasets`) read with ``est``'s
    features, and their latencies as ``est`` was fitted on them (with or
    without the prefill)."""

    results_dir, datasets = select_datasets(args)
    res = load_results(
        results_dir, datasets=datasets, features=list(getattr(est, "feature_names_in_", []))
    )
    return results_dir, res, res.y if est.n_outputs_ == 2 else res.y["T_LLM_decode"]


def check_output_dir(path, overwrite):
    """Refuse, before any training, a folder that cannot or should not be
    written."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"--output_dir {path} exists and is not a folder.")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise ValueError(
            f"--output_dir {path} exists and is not empty; pass --overwrite "
            "to write into it, or choose another folder."
        )
    parent = path if path.exists() else next(p for p in path.parents if p.exists())
    if not parent.is_dir():
        raise ValueError(f"--output_dir {path}: {parent} is not a folder.")

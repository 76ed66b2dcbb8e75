"""``sklat serve``: the model as an HTTP JSON service (see :mod:`sklat.serve`)."""

import sys
from pathlib import Path

from ._options import add_model_option, add_option

_DEFAULT_PORT = 8600


def add_serve_parser(sub):
    parser = sub.add_parser(
        "serve",
        help="serve a model over HTTP: predictions, choices, observations, online updates",
        description="Serve a trained model as an HTTP JSON service (FastAPI on uvicorn; "
        "pip install 'sklat[serve]'): POST /v1/predict, /v1/choose and /v1/observations, "
        "GET /healthz, /readyz, /metrics and /docs. With --observations the service "
        "writes the requests it is told about to that results folder and updates its "
        "model online.",
    )
    # A service answers from the CPU (many small calls).
    add_model_option(parser, device=False)
    add_option(parser, "host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    add_option(parser, "port", type=int, default=_DEFAULT_PORT, help=f"port ({_DEFAULT_PORT})")
    add_option(
        parser,
        "observations",
        type=Path,
        default=None,
        help="results folder for the observations and the model versions (default: none, "
        "no online updates)",
    )
    add_option(
        parser,
        "token_file",
        type=Path,
        default=None,
        help="file holding the bearer token every /v1 call and /metrics must send",
    )
    add_option(
        parser,
        "update_every",
        type=int,
        default=25,
        help="observations between online updates (25)",
    )
    add_option(parser, "window", type=int, default=200, help="observations an update uses (200)")
    add_option(
        parser,
        "drift_alpha",
        type=float,
        default=0.01,
        help="p-value under which a drift check finds drift (0.01)",
    )
    add_option(
        parser,
        "drift_patience",
        type=int,
        default=3,
        help="drift findings in a row after which the model is refitted on the window (3)",
    )
    add_option(parser, "max_rows", type=int, default=10_000, help="most rows per call (10000)")
    add_option(
        parser,
        "max_body_bytes",
        type=int,
        default=4 * 2**20,
        help="largest request body in bytes (4 MiB)",
    )
    add_option(
        parser,
        "log_level",
        choices=["critical", "error", "warning", "info", "debug"],
        default="info",
        help="uvicorn's log level (info)",
    )
    parser.set_defaults(func=cmd_serve)


def read_token(path):
    """The bearer token of ``path``: its text without surrounding whitespace."""
    if path is None:
        return None
    token = path.read_text().strip()
    if not token:
        raise ValueError(f"--token_file {path} is empty.")
    if any(c.isspace() for c in token):
        raise ValueError(f"--token_file {path}: a token is one word, without spaces.")
    return token


def cmd_serve(args, argv):
    try:
        import uvicorn

        from ..serve import create_app
    except ImportError as exc:
        raise ImportError(
            f"sklat serve needs the serve extra ({exc}): pip install 'sklat[serve]'"
        ) from None
    app = create_app(
        args.model,
        observations=args.observations,
        token=read_token(args.token_file),
        update_every=args.update_every,
        window=args.window,
        drift_alpha=args.drift_alpha,
        drift_patience=args.drift_patience,
        max_rows=args.max_rows,
        max_body_bytes=args.max_body_bytes,
    )
    print(f"sklat serve: http://{args.host}:{args.port} (API at /docs)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0

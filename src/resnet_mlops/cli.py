"""`resnet-mlops`: one subcommand per DVC stage, plus the whole pipeline, serving, batch prediction,
the champion and its history, rollback, a version's lineage, sweeps, the CI report, the retraining
schedule (deploy) and the model list.

Every command validates the whole params file before doing anything, and turns
a user's mistake into one line on stderr and exit status 2 (no traceback).
Heavy imports (TensorFlow, MLflow) happen only inside the command that needs them.
"""

from __future__ import annotations

import argparse
import json
import sys

from resnet_mlops import console
from resnet_mlops.errors import EXIT_USER_ERROR, UserError
from resnet_mlops.stages import STAGES, stage


def _run_stage(args) -> int:
    from resnet_mlops.config import load_params
    from resnet_mlops.project import Layout

    params = load_params(args.params)
    if args.command != "prepare":
        console.import_quietly("keras")  # every later stage runs the model
    elif params.data.stream:
        console.import_quietly("tensorflow")  # the TFRecord writer imports it on first use
    summary = stage(args.command).run(params, Layout())
    print(f"{args.command}: {json.dumps(summary, sort_keys=True)}")
    return 0


def _run_pipeline(args) -> int:
    from resnet_mlops.run import run_pipeline

    return run_pipeline()


def _list_models(args) -> int:
    from resnet_mlops.models.summary import describe

    try:
        shape = tuple(int(n) for n in args.input_shape.split("x"))
        rows = describe(args.names or None, shape, args.num_classes)
    except ValueError as exc:
        raise UserError(f"--input-shape {args.input_shape} / --num-classes {args.num_classes}: {exc}") from None
    print(f"{'name':<22}{'params':>14}{'trainable':>14}{'MACs':>18}   (input {args.input_shape}, "
          f"{args.num_classes} classes)")
    for row in rows:
        print(f"{row['name']:<22}{row['params']:>14,}{row['trainable_params']:>14,}{row['macs']:>18,}")
    return 0


def _champion(params_file: str) -> str:
    from resnet_mlops.config import load_params
    from resnet_mlops.project import champion_uri

    return champion_uri(load_params(params_file).register.model_name)


def _serve(args) -> int:
    from resnet_mlops.serving.server import choose_limits, serve

    limits = choose_limits(max_batch=args.max_batch, max_request_mb=args.max_request_mb)
    serve(args.model or _champion(args.params), args.host, args.port, args.workers, args.timeout, limits,
          follow_s=None if args.no_follow else args.follow_seconds)
    return 1  # serve() replaces this process; reaching here means it could not


def _predict(args) -> int:
    from resnet_mlops.serving.predict import predict_files

    model = args.model or _champion(args.params)
    console.import_quietly("keras")
    print(predict_files(args.paths, model, args.output, args.format, args.top_k, args.batch_size), file=sys.stderr)
    return 0


def _lineage(args) -> int:
    from resnet_mlops import tracking
    from resnet_mlops.registry.lineage import lineage

    tracking.configure()
    print(lineage(args.model_uri or args.model or _champion(args.params)))
    return 0


def _registry_command(args) -> int:
    """`champion` and `rollback`: the registry of register.model_name in --params."""
    from mlflow.tracking import MlflowClient

    from resnet_mlops import tracking
    from resnet_mlops.config import load_params
    from resnet_mlops.project import Layout
    from resnet_mlops.registry import rollback

    name = load_params(args.params).register.model_name
    tracking.configure()
    client = MlflowClient()
    if args.command == "champion":
        print(rollback.show(client, name, args.history))
    else:
        print(rollback.rollback(client, name, args.to, Layout()))
    return 0


def _report(args) -> int:
    from resnet_mlops.ci_report import write_report

    print(write_report(args.base, args.output, args.images), end="" if args.output is None else "\n")
    return 0


def _deploy(args) -> int:
    """`deploy`: the logic is pipeline/deploy.py, beside this package in the project's checkout."""
    from pathlib import Path

    checkout = Path(__file__).resolve().parents[2]
    if not (checkout / "pipeline" / "deploy.py").is_file():
        raise UserError(f"deploy needs the project's checkout (pipeline/deploy.py), not found beside {checkout}")
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    from pipeline.deploy import deploy

    deploy(".", cron=args.cron, tz=args.timezone, pool=args.pool, name=args.name, overrides=args.overrides,
           model_name=args.model_name, epochs=args.epochs, paused=args.paused)
    return 0


def _sweep(args) -> int:
    from resnet_mlops.config import load_params
    from resnet_mlops.sweep import sweep

    print(sweep(args.set, args.jobs, load_params(args.params).experiment))
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def _add_model_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--model", metavar="URI",
                         help="model URI (default: models:/<register.model_name>@champion from --params)")
    command.add_argument("--params", default="params.yaml", help="params file naming the model (default: params.yaml)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resnet-mlops", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in STAGES:
        stage = commands.add_parser(name, help=f"run the {name} stage (as dvc.yaml does)")
        stage.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        stage.set_defaults(handler=_run_stage)
    run = commands.add_parser("run", help="the whole pipeline on params.yaml: dvc repro, then a summary")
    run.set_defaults(handler=_run_pipeline)
    serving = commands.add_parser("serve", help="serve the @champion over MLflow's REST scoring server")
    _add_model_arguments(serving)
    serving.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    serving.add_argument("--port", type=_positive, default=5001, help="port (default: 5001)")
    serving.add_argument("--workers", type=_positive, default=1, help="server processes (default: 1)")
    serving.add_argument("--timeout", type=_positive, default=60, help="seconds one request may take (default: 60)")
    serving.add_argument("--no-follow", action="store_true",
                         help="serving an alias: keep the version it names now (default: follow the alias, "
                              "switching to each new version once it loads and answers)")
    serving.add_argument("--follow-seconds", type=_positive, default=10,
                         help="how often the server asks the registry where the alias points (default: 10)")
    serving.add_argument("--max-batch", type=_positive,
                         help="images per request (default: $RESNET_MLOPS_MAX_BATCH or 256)")
    serving.add_argument("--max-request-mb", type=_positive,
                         help="encoded images (or raw pixels) per request, in MB "
                              "(default: $RESNET_MLOPS_MAX_REQUEST_MB or 32)")
    serving.set_defaults(handler=_serve)
    predicting = commands.add_parser("predict", help="label image files, folders and archives, to CSV or JSON")
    predicting.add_argument("paths", nargs="+", metavar="PATH",
                            help="image files, folders, or .zip/.tar/.tar.gz/.tgz archives of images")
    _add_model_arguments(predicting)
    predicting.add_argument("-o", "--output", help="output file, .csv or .json (default: CSV on stdout)")
    predicting.add_argument("--format", choices=("csv", "json"), help="output format (default: from --output)")
    predicting.add_argument("--top-k", type=_positive, help="classes listed per image (default: 5, at most all)")
    predicting.add_argument("--batch-size", type=_positive, default=64, help="images per model call (default: 64)")
    predicting.set_defaults(handler=_predict)
    tracing = commands.add_parser("lineage", help="how a registered version was made: commit, data, params, "
                                                  "and the commands that rebuild it")
    tracing.add_argument("model_uri", nargs="?", metavar="MODEL_URI",
                         help="models:/<name>/<version> or models:/<name>@<alias> (same as --model)")
    _add_model_arguments(tracing)
    tracing.set_defaults(handler=_lineage)
    holding = commands.add_parser("champion", help="which version holds @champion, since when and why")
    holding.add_argument("--history", action="store_true", help="every move of @champion: who, when, why")
    holding.add_argument("--params", default="params.yaml", help="params file naming the model (default: params.yaml)")
    holding.set_defaults(handler=_registry_command)
    rolling = commands.add_parser("rollback", help="move @champion back to an earlier version, if it still serves")
    rolling.add_argument("--to", type=_positive, metavar="VERSION",
                         help="the version to restore (default: the one that held @champion before)")
    rolling.add_argument("--params", default="params.yaml", help="params file naming the model (default: params.yaml)")
    rolling.set_defaults(handler=_registry_command)
    reporting = commands.add_parser("report", help="the CI retraining report in Markdown: params and metrics "
                                                   "against a revision, the charts as PNG, the promotion decision")
    reporting.add_argument("--base", default="HEAD", metavar="REV",
                           help="the git revision to compare the workspace with (default: HEAD)")
    reporting.add_argument("-o", "--output", metavar="FILE", help="the Markdown file (default: stdout)")
    reporting.add_argument("--images", default="reports/ci", metavar="DIR",
                           help="where the charts' PNG files go (default: reports/ci)")
    reporting.set_defaults(handler=_report)
    deploying = commands.add_parser("deploy", help="schedule the Prefect retrain flow: deployment retrain/<name> "
                                                   "on a process work pool (needs PREFECT_API_URL)")
    deploying.add_argument("--cron", default="0 3 * * *", help="when it runs (default: '0 3 * * *', nightly at 03:00)")
    deploying.add_argument("--timezone", default="UTC", help="the cron's IANA timezone (default: UTC)")
    deploying.add_argument("--pool", default="resnet-mlops", help="process work pool, created if missing "
                                                                  "(default: resnet-mlops)")
    deploying.add_argument("--name", default="nightly", help="the deployment's name (default: nightly)")
    deploying.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                           help="a params override each run applies, as `dvc exp run -S` takes it (repeatable)")
    deploying.add_argument("--model-name", help="shortcut for --set register.model_name=NAME")
    deploying.add_argument("--epochs", type=_positive, help="shortcut for --set train.epochs=N")
    deploying.add_argument("--paused", action="store_true", help="create it with its schedule paused")
    deploying.set_defaults(handler=_deploy)
    sweeping = commands.add_parser("sweep", help="a grid of DVC experiments; only the best goes through the "
                                                 "promotion gate")
    sweeping.add_argument("-S", "--set", action="append", default=[], metavar="KEY=V1,V2,...",
                          help="a param and its values, as `dvc exp run -S` takes them (repeat for a grid)")
    sweeping.add_argument("-j", "--jobs", type=_positive, default=1, help="experiments run at once (default: 1)")
    sweeping.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    sweeping.set_defaults(handler=_sweep)
    listing = commands.add_parser("models", help="model names with their parameters and MACs")
    listing.add_argument("names", nargs="*", help="only these models (default: every one that takes the input)")
    listing.add_argument("--input-shape", default="32x32x3", help="HxWxC (default: 32x32x3)")
    listing.add_argument("--num-classes", type=int, default=10)
    listing.set_defaults(handler=_list_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    console.quiet_environment()
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except UserError as exc:
        print(f"resnet-mlops {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())

"""`videossl` command: one sub-command per step (what dvc.yaml and the KFP components call), plus
the pipeline helpers. Params are validated before any step starts; a bad key exits 2 naming it."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from videossl.config import ConfigError, load_config
from videossl.stages import STAGES
from videossl.study_trend import MAKE_RUN_TFLOP

# each step's default folder: where dvc.yaml runs it
DATA, MODELS, CEILING, EVAL, REGISTER = (STAGES[s].out for s in ("ingest", "pretrain", "ceiling", "probe_eval", "register"))


def _add_params(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one param (YAML value), like `dvc exp run -S`")


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text (for scripts)")


def _step(sub, name: str, help: str, **folders: str) -> argparse.ArgumentParser:
    """A step's sub-command: the params options and one --<name> per folder it reads or writes."""
    p = sub.add_parser(name, help=help)
    _add_params(p)
    for option, default in folders.items():
        p.add_argument(f"--{option}", default=default, help=f"{FOLDER_HELP[option]} (default: {default})")
    return p


# what each step's folder options are (the defaults are where dvc.yaml runs the steps)
FOLDER_HELP = {"data": "the ingested dataset (ingest's output)", "models": "pretrain's output: encoder.pt and "
               "frame_encoder.pt", "eval": "probe-eval's output (scores.json)", "out": "where this step writes"}


COMPLETION_SHELLS = ("bash", "zsh")  # shtab writes these from the parser


def _describe(parser: argparse.ArgumentParser) -> None:
    """Every sub-command's --help page opens with what it does (its one-line help in the parent's list)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                sub.description = sub.description or helps.get(name)
                _describe(sub)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="videossl", description="Video-native SSL pipeline: ingest -> pretrain (and "
                                 "ceiling) -> probe-eval -> register")
    from importlib.metadata import version

    ap.add_argument("--version", action="version", version=f"videossl {version('videossl')}")
    sub = ap.add_subparsers(dest="command", required=True)

    p = _step(sub, "ingest", "raw videos -> clip shards + manifest", out=DATA)
    how = p.add_mutually_exclusive_group()
    how.add_argument("--partition", default=None, metavar="I/N", help="ingest only partition I of N (chunks of "
                     "ingest.chunk_videos videos) into --out, a parts folder shared by the N; a finished one is not redone")
    how.add_argument("--merge", default=None, metavar="PARTS", help="merge the N finished partitions in PARTS into "
                     "the dataset in --out (the same dataset and digest as one ingest)")
    _step(sub, "pretrain", "pretrain the video encoder and the bag-of-frames baseline (torchrun)", data=DATA, out=MODELS)
    _step(sub, "ceiling", "the held-out tasks' supervised ceiling: a small network trained with each task's labels, "
          "once per dataset", data=DATA, out=CEILING)
    for p in (_step(sub, "probe-eval", "temporal benchmark on frozen features", data=DATA, models=MODELS, out=EVAL),
              _step(sub, "evaluate", "the temporal benchmark of any encoder (package.module:factory[=arg]), beside "
                    "this project's model and every baseline, in one report", data=DATA, out="outputs/evaluate")):
        p.add_argument("--ceiling", default=None, help=f"the ceiling step's output (dvc.yaml: {CEILING}), checked "
                       "against --data and the params; default: the ceiling is trained here (cached per dataset)")
    p = sub.choices["evaluate"]
    p.add_argument("--encoder", action="append", required=True,
                   help="package.module:factory[=argument] (repeatable); the contract: videossl.eval.external")
    p.add_argument("--models", default=None, help=f"{FOLDER_HELP['models']} (default: {MODELS} when it holds them; "
                   "without them the first --encoder is evaluated alone, against its own bag of frames, ordered "
                   "frames and random initialisation)")
    _step(sub, "register", "log + register the encoder in MLflow, champion/challenger gate", data=DATA, models=MODELS,
          eval=EVAL, out=REGISTER)

    p = _step(sub, "study", "every pretraining objective at equal training compute (FLOPs), several budgets, scored "
              "by the benchmark: a table and a plot", data=DATA, out="outputs/study")
    p.add_argument("--budgets", default="3,6,12", help="training TFLOP per run (forward + backward, counted by "
                   "torch's FLOP counter: the same steps on any machine), comma separated "
                   f"({MAKE_RUN_TFLOP:g}: about make run's 600 steps of the default objective)")
    p.add_argument("--objectives", default=None, help="comma separated (default: all of videossl.study.OBJECTIVES)")
    p.add_argument("--seeds", default=None, help="pretraining seeds, comma separated (default: the params' seed); "
                   "the benchmark keeps the params' seed")

    p = _step(sub, "tune", "one objective's settings chosen on the development split: every combination of the "
              "--grid values trained for --budget TFLOP and scored by the benchmark; the best validation score "
              "(never test) is recorded in <out>/tuned.json, which `videossl study` then trains that objective with",
              data=DATA, out="outputs/study")
    p.add_argument("--objective", required=True, help="one of videossl.study.OBJECTIVES, e.g. jepa/future")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=[V1, V2]",
                   help="a param and the YAML list of values to try (repeatable; the grid is every combination), "
                   "e.g. --grid 'pretrain.lr=[5.0e-4, 1.0e-3]'")
    p.add_argument("--budget", type=float, default=MAKE_RUN_TFLOP, help=f"training TFLOP per trial "
                   f"({MAKE_RUN_TFLOP:g}: about make run's 600 steps of the default objective)")

    p = sub.add_parser("pin-images", help="pin cluster.image and cluster.trainer_image (and kustomize overlays' "
                       "images) by the digest their tags name now, asked of their registries: the pipeline, the "
                       "training jobs and the manifests then run those bytes")
    p.add_argument("--params", default="params.yaml", help="params file rewritten in place (default: params.yaml)")
    p.add_argument("--overlay", action="append", default=[], metavar="DIR",
                   help="a kustomize overlay whose images: to pin too (repeatable), e.g. k8s/overlays/prod")

    p = sub.add_parser("embed", help="one time-ordered embedding per clip of each video, from a registered "
                       "model or a checkpoint: <out>.npy + <out>.json")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="models:/<name>@<alias>, models:/<name>/<version> or a checkpoint (its own "
                       "config says how videos are decoded: no params file)")
    which.add_argument("--encoder", help="package.module:factory[=argument], any encoder of `videossl evaluate`'s "
                       "contract; videos are decoded at the params' ingest.fps and ingest.size, in clips of "
                       "ingest.clip_frames")
    _add_params(p)
    p.add_argument("--tracking-uri", default=None, help="MLflow store of a models:/ URI (default: $MLFLOW_TRACKING_URI)")
    p.add_argument("--out", required=True, help="output path without extension")
    p.add_argument("--stride", type=int, default=None, help="frames between clip starts (default: one clip length)")
    p.add_argument("videos", nargs="+", help="video files or folders")

    p = sub.add_parser("summary", help="print the benchmark table and where the registered model is")
    p.add_argument("--eval", default=EVAL, help=f"{FOLDER_HELP['eval']} (default: {EVAL})")
    p.add_argument("--register", default=REGISTER, help=f"register's output: registration.json (default: {REGISTER})")
    _add_json(p)

    p = sub.add_parser("review", help="the registered champion and challenger side by side (scores, intervals, "
                       "digests, commits, differing params)")
    _add_params(p)
    p.add_argument("--model-name", default=None, help="registered model (default: register.model_name)")
    p.add_argument("--tracking-uri", default=None, help="MLflow store (default: tracking.uri, or "
                   "MLFLOW_TRACKING_URI when tracking.uri is null)")
    _add_json(p)

    p = sub.add_parser("validate", help="only validate params")
    _add_params(p)
    _add_json(p)

    p = sub.add_parser("completion", help="print a shell completion script: eval \"$(videossl completion bash)\" "
                       "(or put the zsh one on your fpath as _videossl)")
    p.add_argument("shell", choices=COMPLETION_SHELLS, help="the shell to complete in")

    p = sub.add_parser("grant-access", help="as the tracking server's admin: create the runs and register users "
                       "and grant each only what its steps do (videossl.cluster.access; the Job "
                       "k8s/base/mlflow-access.yaml runs it)")
    _add_params(p)

    p = sub.add_parser("pipeline", help="the KFP pipeline: compile, submit, run locally, push data versions")
    psub = p.add_subparsers(dest="pipeline_command", required=True)
    c = psub.add_parser("compile", help="write the pipeline IR YAML (image, resources, GPUs, Secrets from `cluster`)")
    _add_params(c)
    c.add_argument("--out", default="pipeline.yaml", help="the IR file to write (default: pipeline.yaml)")
    s = psub.add_parser("submit", help="compile and create a run on the KFP endpoint (cluster.kfp_host or $KFP_HOST)")
    _add_params(s)
    s.add_argument("--host", default=None, help="KFP API endpoint (default: cluster.kfp_host, then $KFP_HOST)")
    s.add_argument("--run-name", default=None, help="the KFP run's name (default: 'videossl <params digest> <data version or ingest>')")
    s.add_argument("--out", default=None, help="also keep the compiled pipeline YAML here")
    s.add_argument("--dry-run", action="store_true", help="print what would be submitted; contact nothing")
    r = psub.add_parser("run-local", help="run the whole DAG with kfp.local's SubprocessRunner")
    _add_params(r)
    r.add_argument("--root", default="outputs/kfp", help="where the run's data and outputs go")
    d = psub.add_parser("push-data", help="dvc push the ingest outputs to cluster.data_remote; prints the git "
                        "revision to use as cluster.data_version")
    _add_params(d)
    d.add_argument("--repo", default=".", help="the DVC/git checkout (default: .)")
    _describe(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        from videossl.steps import STEP_ERRORS

        if isinstance(e, STEP_ERRORS):
            print(f"error: {e}", file=sys.stderr)
            return 1
        line = _user_error(e)
        if line is None or os.environ.get(DEBUG_ENV):
            raise
        print(f"error: {line} (set {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        return 1


DEBUG_ENV = "VIDEOSSL_DEBUG"  # set: errors a user can fix still end with their traceback


def _user_error(e: BaseException) -> str | None:
    """One line for the errors a user fixes outside the code (a path, a permission, a full disk, the
    object store's answer), or None for a bug, which keeps its traceback."""
    if isinstance(e, OSError) and (e.strerror or e.filename):
        where = f": {e.filename}" if e.filename else ""
        return f"{e.strerror or type(e).__name__}{where}"
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # pragma: no cover - botocore is a dependency
        return None
    if isinstance(e, ClientError):
        err = e.response.get("Error", {})
        return f"the object store refused {e.operation_name}: {err.get('Code')} {err.get('Message', '')}".strip()
    if isinstance(e, BotoCoreError):
        return f"the object store: {str(e).splitlines()[0]}"
    return None


def _embed(args: argparse.Namespace, encoder) -> int:
    from videossl.embed import embed_files
    from videossl.progress import Progress

    index = embed_files(encoder, args.videos, args.out, args.stride,
                        lambda files: Progress(files, desc="embed", unit="videos"))
    print(f"embed: {index['shape'][0]} clips x {index['shape'][1]} -> {Path(args.out).with_suffix('.npy')} "
          f"(+ .json: source and time span per row); {len(index['failed'])} video(s) failed")
    return 0


def _dispatch(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "embed" and args.model:  # the checkpoint carries its own config: no params file
        from videossl.embed import load_encoder

        return _embed(args, load_encoder(args.model, args.tracking_uri))
    if cmd == "pin-images":  # rewrites the params file: read after, to check what it wrote
        from videossl.cluster.images import pin_overlay, pin_params

        pinned = {f"cluster.{k}": v for k, v in pin_params(args.params).items()}
        for folder in args.overlay:
            pinned.update({f"{folder}: {k}": v for k, v in pin_overlay(folder).items()})
        load_config(args.params, [])
        print("\n".join(f"pinned {k} -> {v}" for k, v in pinned.items()))
        return 0
    if cmd == "completion":  # generated from the parser itself: it cannot drift from the options
        import shtab

        print(shtab.complete(_parser(), args.shell))
        return 0
    if cmd == "summary":
        from videossl.summary import print_summary

        return print_summary(Path(args.eval), Path(args.register), args.json)
    try:
        cfg = load_config(args.params, args.overrides)  # before any work: bad params never start a step
    except ConfigError as e:
        if getattr(args, "json", False):  # scripts read the answer from stdout, whatever it is
            print(json.dumps({"valid": False, "error": str(e)}))
        raise
    if cmd == "embed":  # --encoder: the params say how videos are decoded
        from videossl.embed import load_external

        return _embed(args, load_external(args.encoder, cfg))
    if cmd == "review":
        from videossl.review import review

        return review(cfg, args.model_name, args.tracking_uri, args.json)
    if cmd == "validate":
        print(json.dumps({"valid": True, "params": cfg.model_dump(mode="json")}, indent=2) if args.json
              else "params ok")
        return 0
    if cmd == "grant-access":
        from videossl.cluster.access import grant, roles_from_env
        from videossl.tracking import tracking_uri

        granted = grant(tracking_uri(cfg.tracking), cfg.tracking.experiment, cfg.register.model_name, roles_from_env())
        print(json.dumps(granted, indent=2, sort_keys=True))
        return 0
    if cmd == "ingest":
        from videossl.steps.ingest import ingest, ingest_partition, merge, parse_partition

        if args.partition:
            ingest_partition(cfg, args.out, *parse_partition(args.partition))
        elif args.merge:
            merge(cfg, args.merge, args.out)
        else:
            ingest(cfg, args.out)
    elif cmd == "pretrain":
        from videossl.steps.pretrain import pretrain

        pretrain(cfg, args.data, args.out)
    elif cmd == "ceiling":
        from videossl.steps.ceiling import ceiling

        ceiling(cfg, args.data, args.out)
    elif cmd == "probe-eval":
        from videossl.steps.probe_eval import probe_eval

        probe_eval(cfg, args.data, args.models, args.out, ceiling_dir=args.ceiling)
    elif cmd == "evaluate":
        from videossl.models.checkpoint import CHECKPOINTS
        from videossl.steps.probe_eval import probe_eval

        models = args.models
        if models is None and (Path(MODELS) / CHECKPOINTS["video"]).is_file():
            models = MODELS
        elif models is None:
            print(f"evaluate: no videossl models in {MODELS}: evaluating {args.encoder[0]} alone, against its own "
                  "bag of frames, ordered frames and random initialisation")
        probe_eval(cfg, args.data, models, args.out, encoders=args.encoder, ceiling_dir=args.ceiling)
    elif cmd == "register":
        from videossl.steps.register import register

        register(cfg, args.data, args.models, args.eval, args.out)
    elif cmd == "study":
        from videossl.study import study

        study(cfg, args.data, args.out, [float(b) for b in args.budgets.split(",")],
              args.objectives.split(",") if args.objectives else None,
              seeds=[int(x) for x in args.seeds.split(",")] if args.seeds else None)
    elif cmd == "tune":
        from videossl.study import tune

        tune(cfg, args.data, args.out, args.objective, _grid(args.grid), args.budget)
    elif cmd == "pipeline":
        return _pipeline(args, cfg)
    return 0


def _grid(specs: list[str]) -> dict[str, list]:
    """--grid KEY=[V1, V2] (a YAML list) -> {KEY: [V1, V2]}, in the order given."""
    import yaml

    grid = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        if not sep or not key:
            raise ConfigError(f"--grid {spec!r}: expected KEY=[V1, V2]")
        grid[key.strip()] = yaml.safe_load(values)
    return grid


def _pipeline(args: argparse.Namespace, cfg) -> int:
    sub = args.pipeline_command
    if sub == "run-local":
        from videossl.pipeline_runs import run_local

        print(json.dumps(run_local(cfg, args.root), indent=2))
    elif sub == "compile":
        from videossl.pipeline_runs import cluster_problems, compile_pipeline

        for problem in cluster_problems(cfg):  # compiling is fine; `submit` refuses these
            print(f"warning: {problem}", file=sys.stderr)
        print(compile_pipeline(cfg, args.out))
    elif sub == "submit":
        from videossl.pipeline_runs import submit

        print(json.dumps(submit(cfg, args.host, args.run_name, args.out, args.dry_run), indent=2))
    elif sub == "push-data":
        from videossl.data.versioning import push_data

        rev = push_data(args.repo, cfg.cluster.data_remote)
        print(json.dumps({"data_version": rev, "data_remote": cfg.cluster.data_remote}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

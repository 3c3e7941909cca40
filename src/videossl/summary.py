"""The closing lines of `make run`: the benchmark table and where the registered model is."""
from __future__ import annotations

import json
from pathlib import Path

from videossl import tracking
from videossl.eval.report import console_table
from videossl.eval.scores import CI_HIGH, CI_LOW, HEADLINE, MODELS, REPORT, SCORES, VIDEO
from videossl.stages import REGISTRATION


def print_summary(eval_dir: Path, register_dir: Path, as_json: bool = False) -> int:
    """The closing lines (or, `as_json`, one JSON object: the headline, each task's scores and the
    registration with the store resolved for this checkout); 1 when there is no benchmark yet."""
    metrics_path = eval_dir / SCORES
    if not metrics_path.is_file():
        print(json.dumps({"error": f"{metrics_path} is missing"}) if as_json
              else f"no benchmark yet: {metrics_path} is missing (run `make run`)")
        return 1
    flat = json.loads(metrics_path.read_text())
    tasks = {k: v for k, v in flat.items() if isinstance(v, dict) and ("n_test" in v or k == HEADLINE)}
    reg_path = register_dir / REGISTRATION
    reg = json.loads(reg_path.read_text()) if reg_path.is_file() else None
    if reg and reg.get("tracking_uri"):
        reg["tracking_uri"] = tracking.reader_uri(reg["tracking_uri"])  # this checkout's store, even in a copy
    if as_json:
        print(json.dumps({"eval": str(eval_dir), HEADLINE: flat.get(HEADLINE), "tasks": tasks, "registration": reg},
                         indent=2))
        return 0
    head = flat.get(HEADLINE, {})
    if VIDEO in head:
        print(f"\n{HEADLINE}: {head[VIDEO]:.3f} [{head.get(VIDEO + CI_LOW, float('nan')):.3f}, "
              f"{head.get(VIDEO + CI_HIGH, float('nan')):.3f}]  (0 = the strongest baseline, 1 = supervised ceiling; "
              f"mean over the held-out tasks: {head.get('tasks', '')})")
    print("\nBenchmark, test videos: the video model with its probe chosen on validation videos, each baseline "
          f"with its strongest probe (95% CIs and every probe in {eval_dir / REPORT})")
    print(console_table({"tasks": tasks}, MODELS))
    if reg is not None:
        if reg.get("registered") is False:
            print(f"\n{reg.get('reason')}")
            return 0
        print(f"\nregistered: {reg.get('model_name')} v{reg.get('version')} "
              f"(aliases: {', '.join(reg.get('aliases', [])) or 'none'}) in {reg.get('tracking_uri')}")
        print(f"  load it: import mlflow; mlflow.set_tracking_uri('{reg.get('tracking_uri')}'); "
              f"model = mlflow.pyfunc.load_model('models:/{reg.get('model_name')}/{reg.get('version')}')")
        print("  embed: model.predict(frames)  # uint8 [clips, T, H, W, 3] -> [clips, T' x D], time order kept "
              "(videossl embed VIDEO... decodes files)")
        if reg.get("reason"):
            print(f"  gate: {reg['reason']}")
        for line in where_to_look(reg):
            print(f"  {line}")
    return 0


LOCAL_UI = "http://127.0.0.1:5000"  # `mlflow ui`'s default address


def where_to_look(reg: dict) -> list[str]:
    """The MLflow pages of this registration: the runs table of its experiment and the registered model."""
    uri, name = str(reg.get("tracking_uri", "")), reg.get("model_name")
    if uri.startswith(("http://", "https://")):
        ui, start = uri.rstrip("/"), []
    else:
        ui, start = LOCAL_UI, [f"browse it: .venv/bin/mlflow ui --backend-store-uri {uri}, then open"]
    pages = [f"{ui}/#/models/{name}  (the registered model: card, aliases, versions)"]
    if reg.get("experiment_id") is not None:
        pages.insert(0, f"{ui}/#/experiments/{reg['experiment_id']}/runs  (the runs table)")
    return start + pages

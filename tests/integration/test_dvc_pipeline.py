"""`dvc repro` runs the four stages, and reruns only what a params change touches."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.tiny import REPO, tiny_params_yaml
from videossl.stages import CODE_ROOT, STAGES, SUBMITTED

BIN = Path(sys.executable).parent


def _run(cmd, cwd, stdout_only: bool = False):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout if stdout_only else proc.stdout + proc.stderr


def _ran(log: str) -> set[str]:
    return set(re.findall(r"Running stage '([a-z_]+)'", log))


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory):
    root = tmp_path_factory.mktemp("dvc-project")
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (root / "params.yaml").write_text(tiny_params_yaml(root))
    _run(["git", "init", "-q"], root)
    _run(["git", "config", "user.email", "tests@videossl.local"], root)
    _run(["git", "config", "user.name", "videossl tests"], root)
    _run([str(BIN / "dvc"), "init", "-q"], root)
    # the project's DVC settings: the offline plots page and the study's plot template
    for name in ("config", "plots_page.html", "plots"):
        (shutil.copytree if (REPO / ".dvc" / name).is_dir() else shutil.copy)(REPO / ".dvc" / name, root / ".dvc" / name)
    shutil.copytree(REPO / "outputs/study/plots", root / "outputs/study/plots")  # committed: dvc.yaml's top-level plots
    return root


def test_repro_runs_all_stages_then_only_what_changed(dvc_project):
    first = _run([str(BIN / "dvc"), "repro"], dvc_project)
    assert _ran(first) == {"ingest", "pretrain", "ceiling", "probe_eval", "register"}
    for out in ["data/ingest/manifest.jsonl", "outputs/pretrain/encoder.pt", "outputs/eval/metrics.json",
                "outputs/eval/plots/benchmark.png", "outputs/register/registration.json"]:
        assert (dvc_project / out).is_file(), out
    assert json.loads((dvc_project / "outputs/register/registration.json").read_text())["version"] in ("1", 1)

    _run(["git", "add", "-A"], dvc_project)
    _run(["git", "commit", "-q", "-m", "first experiment"], dvc_project)  # the baseline of the diffs below
    # a rerun with nothing changed runs nothing, and leaves git clean: timings, run ids and bytecode
    # are in no committed file
    shown = _run([str(BIN / "videossl"), "summary"], dvc_project)
    experiment = json.loads((dvc_project / "outputs/register/registration.json").read_text())["experiment_id"]
    assert f"http://127.0.0.1:5000/#/experiments/{experiment}/runs" in shown  # where to look, straight to the page
    assert "http://127.0.0.1:5000/#/models/videossl-encoder" in shown
    # the load line works as printed, from the project folder
    load = next(line for line in shown.splitlines() if "load it:" in line).split("load it:", 1)[1].strip()
    signature = _run([sys.executable, "-c", f"{load}; print(model.metadata.signature.inputs)"], dvc_project,
                     stdout_only=True)
    assert "uint8" in signature, signature
    assert _ran(_run([str(BIN / "dvc"), "repro"], dvc_project)) == set()
    assert _run(["git", "status", "--porcelain"], dvc_project, stdout_only=True) == ""
    # a fresh clone has no outputs/register (not in git): its repro registers the model it rebuilt
    # (here, into the same store: recognised as the version already there), and dvc.lock stays as committed
    shutil.rmtree(dvc_project / "outputs" / "register")
    assert _ran(_run([str(BIN / "dvc"), "repro"], dvc_project)) == {"register"}
    again = json.loads((dvc_project / "outputs/register/registration.json").read_text())
    assert again["same_model"] and again["version"] in ("1", 1)
    assert _run(["git", "status", "--porcelain"], dvc_project, stdout_only=True) == ""

    params = yaml.safe_load((dvc_project / "params.yaml").read_text())
    params["probe_eval"]["epochs"] //= 4  # fewer L-BFGS iterations: other probe scores
    (dvc_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    second = _run([str(BIN / "dvc"), "repro"], dvc_project)
    # the ceiling stage reruns too (it reads probe_eval), and finds its network in the cache: the same record
    assert _ran(second) == {"ceiling", "probe_eval", "register"}
    assert _run(["git", "status", "--porcelain", "outputs/ceiling"], dvc_project, stdout_only=True) == ""
    assert json.loads((dvc_project / "outputs/register/registration.json").read_text())["version"] in ("2", 2)

    # two experiments side by side: a headline of numbers per stage, keyed the way people read them
    diff = json.loads(_run([str(BIN / "dvc"), "metrics", "diff", "--all", "--json"], dvc_project, stdout_only=True))
    assert set(diff) == {f"{STAGES[s].out}/metrics.json" for s in ("ingest", "pretrain", "ceiling", "probe_eval")}
    rows = {f"{f}:{k}": v for f, m in diff.items() for k, v in m.items()}
    assert len(rows) <= 60, sorted(rows)
    assert all(isinstance(v.get("new"), (int, float)) for v in rows.values()), rows
    assert not any("seconds" in k or "per_second" in k for k in rows if "ingest" not in k), sorted(rows)
    scores = diff["outputs/eval/metrics.json"]
    # the headline and, per held-out task, the video model, the strongest baseline and the ceiling
    assert {"temporal_score.video", "permanence.video", "permanence.strongest_baseline", "permanence.supervised",
            "gravity_law.video"} <= set(scores)
    assert not any(k.startswith(("arrow_of_time.", "content_count.")) for k in scores)  # the full record has those
    assert set(scores["permanence.video"]) >= {"old", "new"}
    assert "clips_per_split.train" in diff["data/ingest/metrics.json"]
    # `dvc exp show` leads with the held-out headline, before the data and training numbers (dvc.yaml's
    # top-level metrics list): the first columns a terminal shows
    header = _run([str(BIN / "dvc"), "exp", "show", "--csv"], dvc_project, stdout_only=True).splitlines()[0].split(",")
    metrics = header[header.index("parent") + 1:]
    assert metrics[:3] == ["temporal_score.video", "temporal_score.video_ci_low", "temporal_score.video_ci_high"], metrics
    assert metrics.index("gravity_law.video") < metrics.index("clips_per_split.train"), metrics
    # the full record and the timings are still written, beside the headline
    assert "video_attentive" in json.loads((dvc_project / "outputs/eval/scores.json").read_text())["arrow_of_time"]
    assert "total" in json.loads((dvc_project / "outputs/eval/timings.json").read_text())
    # one plot per question: a bar chart per task (each revision's bar beside the other's) and the
    # video model's confusion matrix per task in DVC's confusion template
    plots = json.loads(_run([str(BIN / "dvc"), "plots", "diff", "--json", "HEAD"], dvc_project, stdout_only=True))
    assert not plots.get("errors"), plots["errors"]
    arrow = plots["data"]["outputs/eval/plots/tasks/arrow_of_time.json"]
    rows = [r for p in arrow for r in p["content"]["data"]["values"]]
    assert {(r["rev"], r["model"]) for r in rows} >= {("HEAD", "video model"), ("workspace", "video model"),
                                                       ("HEAD", "bag of frames")}
    assert "outputs/eval/plots/tasks/temporal_score.json" in plots["data"]
    [confusion] = plots["data"]["outputs/eval/plots/confusion/arrow_of_time.json"]
    assert confusion["content"]["facet"]["column"]["field"] == "rev"  # DVC's confusion template
    cells = {(r["actual"], r["predicted"]) for r in confusion["content"]["data"]["values"]}
    assert {a for a, _ in cells} == {"forward", "backward"}, cells
    # the committed objective study: one line per objective and precision against training TFLOP, a point
    # per budget (.dvc/plots/study.json)
    study = plots["data"]["outputs/study/plots/study.json"][0]
    assert study["content"]["encoding"]["color"]["field"] == "line"
    values = [r for r in study["content"]["data"]["values"] if r["rev"] == "HEAD"]
    assert {r["objective"] for r in values} >= {"pretext", "contrastive"}
    assert len({(r["line"], r["compute_tflop"]) for r in values}) == len(values)
    # the HTML page draws offline: vega, vega-lite and vega-embed inline, nothing fetched from a network
    page = _run([str(BIN / "dvc"), "plots", "diff", "HEAD", "-o", "rendered"], dvc_project, stdout_only=True)
    html = (dvc_project / "rendered" / "index.html").read_text()
    assert page.strip().endswith("rendered/index.html") and "vegaEmbed(" in html
    assert not re.findall(r"<script[^>]+src=|<link[^>]+href=", html), "the page loads something"
    assert "outputs_eval_plots_benchmark.png" in html  # the PNGs, scaled to the page by its style


def test_the_kfp_dag_gives_what_dvc_repro_gave(dvc_project):
    """One result from every runner: the same commit, data and params through `videossl pipeline
    run-local` (kfp.local, the params passed as the DAG's canonical text) train bit-identical weights,
    score them identically, and its registration is recognised as the model dvc registered."""
    from videossl.models.checkpoint import load_checkpoint, state_digest

    out = _run([str(BIN / "videossl"), "pipeline", "run-local", "--params", "params.yaml", "--root", "kfp-run"],
               dvc_project, stdout_only=True)
    result = json.loads(out[out.rindex("\n{\n") + 1:])  # the CLI's last print: the run's JSON summary
    loc = {step: Path(uri) for step, uri in result["locations"].items()}
    for name in ("encoder.pt", "frame_encoder.pt"):
        dvc_weights = state_digest(load_checkpoint(dvc_project / "outputs/pretrain" / name)["encoder"])
        kfp_weights = state_digest(load_checkpoint(loc["pretrain"] / name)["encoder"])
        assert kfp_weights == dvc_weights, name
    assert (loc["probe_eval"] / "scores.json").read_bytes() == (dvc_project / "outputs/eval/scores.json").read_bytes()
    dvc_version = json.loads((dvc_project / "outputs/register/registration.json").read_text())["version"]
    registered = json.loads((loc["register"] / "registration.json").read_text())
    assert registered["same_model"] and str(registered["version"]) == str(dvc_version)


def test_dvc_stages_read_what_videossl_stages_says():
    """dvc.yaml restates STAGES (DVC cannot import it): the same params sections, the same code deps."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert set(stages) == set(STAGES)
    for name, stage in STAGES.items():
        assert stages[name]["params"] == list(stage.params), name
        code = [d for d in stages[name]["deps"] if d.startswith(CODE_ROOT + "/")]
        assert code == [f"{CODE_ROOT}/{c}" for c in stage.code], name
        assert f"--out {stage.out}" in stages[name]["cmd"], name
    # the one output DVC tracks of the register stage: the submission record, not the registration
    assert [list(o)[0] for o in stages["register"]["outs"]] == [f"{STAGES['register'].out}/{SUBMITTED}"]

"""`videossl study`: objectives at equal training time, scored by the real steps, tabled and plotted."""
from __future__ import annotations

import json

import yaml

from tests.tiny import tiny_config
from videossl.eval.scores import HEADLINE
from videossl.study import study


def test_study_trains_each_objective_for_its_budget_and_writes_table_and_plot(tiny_data, tmp_path):
    # the study's mechanics are under test, not the benchmark: one held-out task read with one probe
    cfg = tiny_config(tmp_path, "pretrain.metrics_port=null", "probe_eval.tasks=[gravity_law]",
                      "probe_eval.probes=[linear]", "register.gate_metrics=[gravity_law.video_chosen]")
    out = tmp_path / "study"
    rows = study(cfg, tiny_data, out, budgets=[1.0], objectives=["pretext"], calibration_steps=4)
    assert [r["objective"] for r in rows] == ["pretext"]
    for r in rows:
        assert r["steps"] >= 1 and r["train_seconds"] > 0 and r[HEADLINE] is not None
        assert r[f"{HEADLINE}_ci_low"] <= r[HEADLINE] <= r[f"{HEADLINE}_ci_high"]
        assert (out / "runs" / f"{r['objective']}-1s" / "eval" / "metrics.json").is_file()
    assert json.loads((out / "study.json").read_text()) == rows
    plot = json.loads((out / "plots" / "study.json").read_text())
    assert [p["objective"] for p in plot] == ["pretext"] and all(p["compute_seconds"] > 0 for p in plot)
    table = (out / "study.md").read_text()
    assert table.count("\n") == 2 + len(rows) and "| pretext | 1 | 0 |" in table
    assert (out / "plots" / "study.png").stat().st_size > 0

    # a later invocation adds its rows beside the committed ones (same objective, budget and seed: replaced),
    # one per pretraining seed; every seed's model is scored on the same benchmark (the params' seed)
    shared = "pretext+contrastive/shared(1:2)"
    more = study(cfg, tiny_data, out, budgets=[1.0], objectives=[shared], calibration_steps=4, seeds=[0, 1])
    assert [(r["objective"], r["seed"]) for r in more] == [("pretext", 0), (shared, 0), (shared, 1)]
    assert more[:1] == rows
    trained = yaml.safe_load((out / "runs" / f"{shared}-1s" / "pretrain" / "config.yaml").read_text())
    assert trained["pretrain"]["contrastive"]["pretext_views"] is True
    assert trained["pretrain"]["objective"] == {"pretext": 0.5, "contrastive": 1.0} and trained["seed"] == 0
    assert yaml.safe_load((out / "runs" / f"{shared}-1s-seed1" / "pretrain" / "config.yaml").read_text())["seed"] == 1
    first = json.loads((out / "runs" / "pretext-1s" / "eval" / "scores.json").read_text())["gravity_law"]
    for run in (f"{shared}-1s", f"{shared}-1s-seed1"):  # the same benchmark clips: the same units, ceiling, baselines
        scored = json.loads((out / "runs" / run / "eval" / "scores.json").read_text())["gravity_law"]
        assert {k: scored[k] for k in ("n_test", "supervised", "frames")} == {k: first[k] for k in ("n_test", "supervised", "frames")}
    assert "| seed |" in (out / "study.md").read_text()

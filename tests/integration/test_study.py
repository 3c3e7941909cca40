"""`videossl study`: objectives at equal training time, scored by the real steps, tabled and plotted."""
from __future__ import annotations

import json

import yaml

from tests.tiny import tiny_config
from videossl.eval.scores import HEADLINE
from videossl.study import study


def test_study_trains_each_objective_for_its_budget_and_writes_table_and_plot(tiny_data, tmp_path):
    cfg = tiny_config(tmp_path, "pretrain.metrics_port=null")
    out = tmp_path / "study"
    rows = study(cfg, tiny_data, out, budgets=[1.0], objectives=["pretext", "contrastive"], calibration_steps=4)
    assert [r["objective"] for r in rows] == ["pretext", "contrastive"]
    for r in rows:
        assert r["steps"] >= 1 and r["train_seconds"] > 0 and r[HEADLINE] is not None
        assert r[f"{HEADLINE}_ci_low"] <= r[HEADLINE] <= r[f"{HEADLINE}_ci_high"]
        assert (out / "runs" / f"{r['objective']}-1s" / "eval" / "metrics.json").is_file()
    assert json.loads((out / "study.json").read_text()) == rows
    plot = json.loads((out / "plots" / "study.json").read_text())
    assert [p["objective"] for p in plot] == ["pretext", "contrastive"] and all(p["compute_seconds"] > 0 for p in plot)
    table = (out / "study.md").read_text()
    assert table.count("\n") == 2 + len(rows) and "| pretext | 1 |" in table
    assert (out / "plots" / "study.png").stat().st_size > 0

    # a later invocation adds its rows beside the committed ones (same objective and budget: replaced)
    shared = "pretext+contrastive/shared(1:2)"
    more = study(cfg, tiny_data, out, budgets=[1.0], objectives=[shared], calibration_steps=4)
    assert [r["objective"] for r in more] == ["pretext", "contrastive", shared] and more[:2] == rows
    trained = yaml.safe_load((out / "runs" / f"{shared}-1s" / "pretrain" / "config.yaml").read_text())["pretrain"]
    assert trained["contrastive"]["pretext_views"] is True and trained["objective"] == {"pretext": 0.5, "contrastive": 1.0}

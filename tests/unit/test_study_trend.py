"""The study's trend table: a line through the seed means against log2 compute, and where it reaches
the targets (measured, extrapolated, or not at all)."""
import pytest

from videossl.study_trend import MAKE_RUN_TFLOP, plot_points, seed_table, trend_markdown, trends

BUDGETS = (12.0, 24.0, 48.0)


def _rows(objective: str, scores: dict[str, list[float]], seeds: int = 1, supervised: float = 1.0) -> list[dict]:
    """Rows as the study writes them: one per budget and seed; `scores` holds each key's value per budget."""
    rows = []
    for i, tflop in enumerate(BUDGETS):
        for seed in range(seeds):
            row = {"objective": objective, "budget": f"{tflop:g} TFLOP", "seed": seed, "precision": "bf16",
                   "compute_tflop": tflop, "train_seconds": 15.0 * tflop}  # 15 s a TFLOP
            for key, values in scores.items():
                row[key] = values[i] + (0.02 if seed % 2 else -0.02) * (seeds > 1)  # seeds around the mean
                row[f"{key}_strongest_baseline"], row[f"{key}_supervised"] = 0.5, supervised
            rows.append(row)
    return rows


def test_a_rising_line_is_extrapolated_to_where_it_crosses_each_target():
    # +0.05 per doubling from 0.30 at 12 TFLOP: the baseline (0.5) 4 doublings on, 0.9 (90% of a ceiling
    # of 1) 12 doublings on; two seeds per budget whose mean is the line
    rows = _rows("rising", {"gravity_law": [0.30, 0.35, 0.40], "temporal_score": [-0.1, 0.0, 0.1]}, seeds=2)
    found = {t["task"]: t for t in trends(rows, ("gravity_law",), min_ceiling=0.9)}
    g = found["gravity_law"]
    assert g["per_doubling"] == pytest.approx(0.05) and g["largest"] == pytest.approx(0.40)
    assert g["reaches_baseline"] == f"~{12 * 2 ** 4:.0f} TFLOP ({2 ** 4:.0f}x make run, ~0.8 h here)"
    assert g["reaches_ceiling_share"] == f"~{12 * 2 ** 12:,.0f} TFLOP ({2 ** 12:,.0f}x make run, ~205 h here)"
    assert MAKE_RUN_TFLOP == BUDGETS[0]
    # the headline: 0 is the strongest baseline, measured at 24 TFLOP already
    assert found["temporal_score"]["reaches_baseline"] == "first measured at 24 TFLOP"
    table = trend_markdown(list(found.values()))
    assert table.count("\n") == 2 + 2 and "| rising | bf16 | 12, 24, 48 | gravity_law | 0.400 | +0.050 |" in table


def test_flat_falling_far_and_unscored_lines():
    rows = (_rows("flat", {"gravity_law": [0.25, 0.25, 0.25]})
            + _rows("falling", {"gravity_law": [0.30, 0.28, 0.26]})
            + _rows("crawling", {"gravity_law": [0.25, 0.2501, 0.2502]})
            + _rows("low_ceiling", {"future": [0.50, 0.52, 0.54]}, supervised=0.6)
            + _rows("two_budgets", {"gravity_law": [0.3, 0.4, 0.5]})[:2])
    found = {(t["objective"], t["task"]): t for t in trends(rows, ("gravity_law", "future"), min_ceiling=0.9)}
    assert found[("flat", "gravity_law")]["reaches_baseline"] == "not rising"
    assert found[("falling", "gravity_law")]["reaches_ceiling_share"] == "not rising"
    assert found[("crawling", "gravity_law")]["reaches_baseline"] == "> 20 doublings past 48 TFLOP"
    # a task whose ceiling is below the headline's bar has no target; two budgets make no line
    assert ("low_ceiling", "future") not in found and not any(o == "two_budgets" for o, _ in found)


def test_the_seed_table_averages_seeds_and_puts_the_best_mean_first_within_a_budget():
    rows = (_rows("worse", {"temporal_score": [-0.3, -0.2, -0.1], "gravity_law": [0.2, 0.3, 0.4]}, seeds=2)
            + _rows("better", {"temporal_score": [0.1, 0.2, 0.3], "gravity_law": [0.5, 0.5, 0.5]}, seeds=2)
            + _rows("one_seed", {"temporal_score": [0.9, 0.9, 0.9]}))
    table = seed_table(rows, ["gravity_law"]).splitlines()
    assert len(table) == 2 + 2 * len(BUDGETS)  # one row per objective and budget with two seeds; one seed: none
    assert table[2] == "| 12 TFLOP | bf16 | better | 0.080 (0), 0.120 (1) | 0.100 | 0.500 |"
    assert table[3].startswith("| 12 TFLOP | bf16 | worse |") and table[-1].startswith("| 48 TFLOP | bf16 | worse |")


def test_plot_lines_keep_precisions_apart_and_average_seeds():
    # one objective trained in bf16 (two seeds) and in fp32 (one seed) at the same budgets: two lines, one
    # point per budget each, never one line zigzagging between precisions or seeds
    bf16 = _rows("mae", {"temporal_score": [-0.3, -0.2, -0.1], "gravity_law": [0.2, 0.3, 0.4]}, seeds=2)
    fp32 = [{**r, "precision": "fp32"} for r in _rows("mae", {"temporal_score": [0.0, 0.1, 0.2]})]
    for r in bf16 + fp32:
        r["temporal_score_ci_low"], r["temporal_score_ci_high"] = r["temporal_score"] - 0.1, r["temporal_score"] + 0.1
    found = plot_points(bf16 + fp32, ("temporal_score", "gravity_law", "permanence"))
    assert [(p["line"], p["compute_tflop"], p["seeds"]) for p in found] == (
        [("mae (bf16)", b, 2) for b in BUDGETS] + [("mae (fp32)", b, 1) for b in BUDGETS])
    assert found[0]["temporal_score"] == pytest.approx(-0.3) and found[0]["temporal_score_ci_low"] == pytest.approx(-0.4)
    assert found[3]["temporal_score"] == pytest.approx(0.0) and found[3]["gravity_law"] is None  # fp32: not measured
    assert all(p["permanence"] is None for p in found)  # no row measured it


def test_a_tuned_objective_is_its_own_line_only_where_its_settings_change_training(tmp_path):
    from tests.tiny import tiny_config
    from videossl.study import _key, variant

    cfg = tiny_config(tmp_path)
    untuned = {"objective": "mae/future", "budget": "12 TFLOP", "seed": 0}
    tuned = {**untuned, "settings": {"pretrain.lr": cfg.pretrain.lr * 4, "pretrain.jepa.predictor_depth":
                                     cfg.pretrain.jepa.predictor_depth}}
    same = {**untuned, "settings": {"pretrain.lr": cfg.pretrain.lr}}  # tuning chose the params' own value
    assert variant(untuned, cfg) == variant(same, cfg) == "mae/future"
    assert variant(tuned, cfg) == f"mae/future [pretrain.lr={cfg.pretrain.lr * 4}]"
    assert _key(tuned, cfg) != _key(untuned, cfg) == _key(same, cfg)  # a tuned row joins, never replaces

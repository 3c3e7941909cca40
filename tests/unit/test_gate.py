"""The registry gate as a rule: which margins, which bound of the paired gap, which params, read
from which metrics. The gate against real MLflow stores is tests/integration/test_registry.py."""
from __future__ import annotations

import math

import pytest

from tests.tiny import REPO
from videossl import gate
from videossl.config import ConfigError, load_config
from videossl.gate import Policy


@pytest.mark.parametrize("override, key, hint", [
    ("register.gate_metrics=[arrow_of_time.video, colour.video]", "register.gate_metrics", "probe_eval.tasks"),
    ("register.gate_metrics=[arrow_of_time.frames]", "register.gate_metrics", "not a video-model score"),
    ("register.gate_metrics=[]", "register.gate_metrics", "at least 1"),
    ("register.gate_metrics=[speed.video, speed.video]", "register.gate_metrics", "distinct"),
    ("register.min_margin_over_frames=-0.1", "register.min_margin_over_frames", "greater than or equal to 0"),
    ("register.min_margin_over_champion=2", "register.min_margin_over_champion", "less than or equal to 1"),
    ("register.gate_metric=speed.video", "register.gate_metric", "gate_metrics"),  # the old key is gone
])
def test_invalid_gate_params_name_the_key(override, key, hint):
    with pytest.raises(ConfigError) as err:
        load_config(REPO / "params.yaml", [override])
    assert f"'{key}'" in str(err.value) and hint in str(err.value)


def test_gate_decisions():
    aot, speed = "arrow_of_time.video", "speed.video"
    one = Policy((aot,))

    def d(value, champ, frames=0.5, policy=one, champion_version="2"):
        vals = value if isinstance(value, dict) else {aot: value}
        fr = frames if isinstance(frames, dict) else {m: frames for m in vals}
        ch = champ if isinstance(champ, dict) else {m: champ for m in vals}
        return gate.decide(policy, vals, fr, champion_version, ch)

    # a margin of 0 still demands strictly better: a tie moves nothing, against either side
    tie = d(0.7, 0.7)
    assert not tie.promote and "gain +0, needs more than 0: fail" in tie.reason
    frames_tie = d(0.5, None, frames=0.5, champion_version=None)
    assert not frames_tie.promote and "vs bag of frames 0.5: gain +0, needs more than 0: fail" in frames_tie.reason
    # margins, with float noise forgiven: 0.71 - 0.66 meets a 0.05 margin
    m = Policy((aot,), min_margin_over_champion=0.05, min_margin_over_frames=0.2)
    ok = d(0.71, 0.66, frames=0.51, policy=m)
    assert ok.promote
    assert ok.reason == ("promoted over v2 | arrow_of_time.video 0.71 vs champion v2 0.66: gain +0.05, needs at least +0.05: pass; "
                         "vs bag of frames 0.51: gain +0.2, needs at least +0.2: pass")
    assert not d(0.709, 0.66, frames=0.4, policy=m).promote
    # lower is better: the gain is the decrease
    low = Policy(("speed.video_error",), higher_is_better=False)
    better = gate.decide(low, {"speed.video_error": 0.2}, {"speed.video_error": 0.5}, "4", {"speed.video_error": 0.3})
    assert better.promote and "(lower is better)" in better.reason and "gain +0.1, needs more than 0: pass" in better.reason
    assert not gate.decide(low, {"speed.video_error": 0.4}, {"speed.video_error": 0.5}, "4",
                           {"speed.video_error": 0.3}).promote
    # NaN never wins, champion or not
    assert not d(math.nan, 0.7).promote and not d(math.nan, None, champion_version=None).promote
    assert not d(0.9, 0.7, frames=math.nan).promote
    # a champion without a recorded score for the metric (other gate metrics, a tampered record): the
    # gate fails closed, never promotes on no evidence; a person decides (videossl review)
    unrecorded = d(0.6, None)
    assert not unrecorded.promote
    assert "vs champion v2: no recorded score to compare with, fail (closed" in unrecorded.reason
    assert not d(0.6, math.nan).promote  # nor on a NaN score
    # several metrics: all must pass, and the reason names the ones that failed
    two = Policy((aot, speed))
    mixed = d({aot: 0.8, speed: 0.5}, {aot: 0.7, speed: 0.6}, frames=0.4, policy=two)
    assert not mixed.promote and mixed.reason.startswith("challenger only (champion stays v2): failed speed.video |")
    assert [c.passed for c in mixed.checks] == [True, False]
    assert mixed.tags()["gate.speed.video"].startswith("fail: speed.video 0.5 vs champion v2 0.6: gain -0.1, needs more than 0: fail")
    assert d({aot: 0.8, speed: 0.7}, {aot: 0.7, speed: 0.6}, frames=0.4, policy=two).promote
    assert gate.frames_key("future_retrieval.video_r1") == "future_retrieval.frames_r1"


def test_the_gate_promotes_on_the_lower_bound_of_the_paired_gap_not_the_point_estimate():
    """Twelve lucky test clips at 0.58 [0.32, 0.81] once became champion: the paired gap's lower bound
    must clear the margin over the bag of frames, however good the point estimate looks."""
    head = "temporal_score.video"
    policy = Policy((head,), min_margin_over_frames=0.05)
    assert gate.gap_low_key(head) == "temporal_score.video_minus_frames_ci_low"
    assert gate.gap_low_key("speed.video_knn") == "speed.video_knn_minus_frames_knn_ci_low"
    noisy = gate.decide(policy, {head: 0.6}, {head: 0.0}, None, {}, {head: 0.02})
    assert not noisy.promote
    assert "paired gain +0.6, 95% lower bound +0.02, needs at least +0.05: fail" in noisy.reason
    sure = gate.decide(policy, {head: 0.6}, {head: 0.0}, None, {}, {head: 0.41})
    assert sure.promote and "95% lower bound +0.41" in sure.reason
    # where no paired gap was measured, the point estimate is all there is
    assert gate.decide(policy, {head: 0.6}, {head: 0.0}, None, {}, {head: None}).promote


def test_gate_inputs_read_the_paired_gap_from_metrics(tmp_path):
    from videossl.steps.register import gate_inputs

    metrics = {"temporal_score": {"video": 0.5, "frames": 0.0, "video_minus_frames": 0.5,
                                  "video_minus_frames_ci_low": 0.3, "video_minus_frames_ci_high": 0.7},
               "speed": {"video": 0.9, "frames": 0.34}}
    values, frames, lows = gate_inputs(Policy(("temporal_score.video", "speed.video")), metrics, tmp_path / "m.json")
    assert values == {"temporal_score.video": 0.5, "speed.video": 0.9}
    assert frames == {"temporal_score.video": 0.0, "speed.video": 0.34}
    assert lows == {"temporal_score.video": 0.3, "speed.video": None}



"""The champion gate: may a newly registered video encoder become `champion`?

Every gate metric (`register.gate_metrics`, flattened metrics.json keys of the video model such as
`arrow_of_time.video` or `future_retrieval.video_r1`) is checked twice:

- **vs the champion**: the new score must beat the current champion's score of the same key (its
  version tag) by at least `register.min_margin_over_champion`;
- **vs the bag of frames**: the new score must beat the frame encoder's score of the same task and
  probe (`arrow_of_time.frames`, `future_retrieval.frames_r1`) by at least
  `register.min_margin_over_frames`. A video model that a bag of frames matches has shown nothing
  about time, whatever the champion scores. Where the benchmark measured the paired gap
  (`<task>.video_minus_frames` with its interval over resampled test videos), the gain that counts
  is the gap's 95% LOWER bound, not the point estimate: a model promoted on 12 lucky clips is
  noise, and the lower bound says so. `temporal_score.video` is already relative to the bag of
  frames (which scores 0), so its own lower bound is the gain.

"Beat by at least m" means gain > 0 and gain >= m: a margin of 0 still demands strictly better, so a
tie never moves the champion (no churn between equal models) and never passes the frames check (0.5
vs 0.5 on arrow of time is no evidence). Gains are compared with a 1e-9 tolerance so 0.71 - 0.66 is
not refused a margin of 0.05 for float noise.

**All checks of all gate metrics must pass** to promote: the gate names the abilities a champion
must have, and a model better at one and worse at another is a trade-off for a human (`videossl
review`), not for an alias. A new NaN never passes. Where there is no champion, the champion check
passes. Where the champion's recorded score for a metric is missing (registered under other gate
metrics, or its record was tampered with) or NaN, the check fails closed and says so: nothing moves
the alias without evidence that the new model is better; `videossl review` lets a person decide.
The champion's scores are its registration run's first logged metrics (registry.recorded_scores),
never its editable tags.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from videossl.eval.scores import CI_LOW, FRAMES, VIDEO, dotted, gap, split, swap_model

TOLERANCE = 1e-9


def frames_key(metric: str) -> str:
    """The bag-of-frames counterpart of a video-model key: `task.video_r1` -> `task.frames_r1`."""
    task, name = split(metric)
    try:
        return dotted(task, swap_model(name, VIDEO, FRAMES))
    except ValueError:
        raise ValueError(f"gate metric {metric!r} is not a video-model score (task.video[_probe])") from None


def gap_low_key(metric: str) -> str:
    """The lower bound of the paired gap to the bag of frames: `task.video_r5` -> `task.video_r5_minus_frames_r5_ci_low`."""
    task, name = split(metric)
    return dotted(task, gap(name, swap_model(name, VIDEO, FRAMES)) + CI_LOW)


def fmt(v: float | None) -> str:
    if v is None:
        return "—"
    return str(int(v)) if float(v).is_integer() else f"{v:.4g}"


@dataclass(frozen=True)
class Policy:
    metrics: tuple[str, ...]
    min_margin_over_champion: float = 0.0
    min_margin_over_frames: float = 0.0
    higher_is_better: bool = True

    @classmethod
    def from_config(cls, rcfg) -> "Policy":
        return cls(tuple(rcfg.gate_metrics), rcfg.min_margin_over_champion, rcfg.min_margin_over_frames,
                   rcfg.higher_is_better)


@dataclass(frozen=True)
class Comparison:
    """One check: `value` against `other` (the champion's or the bag of frames' score)."""
    against: str              # "champion" | "frames"
    other: float | None       # None: nothing to compare with (no champion / no recorded score)
    gain: float | None        # value - other, sign flipped when lower is better
    margin: float
    passed: bool
    reason: str               # "vs champion v2 0.66: gain +0.05, needs at least +0.01: pass"


@dataclass(frozen=True)
class MetricCheck:
    metric: str
    value: float
    vs_champion: Comparison
    vs_frames: Comparison

    @property
    def passed(self) -> bool:
        return self.vs_champion.passed and self.vs_frames.passed

    @property
    def reason(self) -> str:
        return f"{self.metric} {fmt(self.value)} {self.vs_champion.reason}; {self.vs_frames.reason}"


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    checks: tuple[MetricCheck, ...]
    policy: Policy
    champion_version: str | None = None  # the champion before this registration

    def as_dict(self) -> dict:
        """JSON-safe (NaN -> None): what registration.json records under "gate"."""
        def clean(x):
            if isinstance(x, float) and not math.isfinite(x):
                return None
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            return x

        return {
            "metrics": list(self.policy.metrics),
            "min_margin_over_champion": self.policy.min_margin_over_champion,
            "min_margin_over_frames": self.policy.min_margin_over_frames,
            "higher_is_better": self.policy.higher_is_better,
            "combine": "all",
            "checks": {c.metric: clean({"value": c.value, "passed": c.passed, "reason": c.reason,
                                        "vs_champion": asdict(c.vs_champion), "vs_frames": asdict(c.vs_frames)})
                       for c in self.checks},
        }

    def tags(self) -> dict[str, str]:
        """Model version tags: the decision, the margins and one line per metric."""
        tags = {
            "gate.decision": "promote" if self.promote else "challenger only",
            "gate.reason": self.reason,
            "gate.metrics": ",".join(self.policy.metrics),
            "gate.min_margin_over_champion": repr(self.policy.min_margin_over_champion),
            "gate.min_margin_over_frames": repr(self.policy.min_margin_over_frames),
            "gate.previous_champion": self.champion_version or "none",
        }
        tags.update({f"gate.{c.metric}": ("pass: " if c.passed else "fail: ") + c.reason for c in self.checks})
        return tags


def _compare(value: float, other: float | None, margin: float, higher_is_better: bool, against: str,
             label: str, gain_low: float | None = None) -> Comparison:
    """`label` names the other side in the reason ("champion v2", "bag of frames"). With `gain_low`
    (the paired gap's 95% lower bound) that bound is the gain that must clear the margin."""
    need = "needs more than 0" if margin == 0 else f"needs at least {margin:+.4g}"
    if other is None:
        # only reachable for the champion: the frames baseline is required before the gate runs
        return Comparison(against, None, None, margin, False,
                          f"vs {label}: no recorded score to compare with, fail (closed: `videossl review` decides)")
    if math.isnan(value) or math.isnan(other) or (gain_low is not None and math.isnan(gain_low)):
        return Comparison(against, other, math.nan, margin, False, f"vs {label} {fmt(other)}: NaN, fail")
    point = (value - other) if higher_is_better else (other - value)
    gain = point if gain_low is None else gain_low
    passed = gain > 0 and gain >= margin - TOLERANCE
    what = f"gain {point:+.4g}" if gain_low is None else f"paired gain {point:+.4g}, 95% lower bound {gain_low:+.4g}"
    return Comparison(against, other, gain, margin, passed,
                      f"vs {label} {fmt(other)}: {what}, {need}: {'pass' if passed else 'fail'}")


def decide(policy: Policy, values: dict[str, float], frames: dict[str, float],
           champion_version: str | None, champion_values: dict[str, float | None],
           frames_gap_low: dict[str, float | None] | None = None) -> GateDecision:
    """`values`/`frames`: gate metric -> the new model's / its bag of frames' score;
    `champion_values`: gate metric -> the champion's recorded score (None when it has none);
    `frames_gap_low`: gate metric -> the paired gap's lower bound (None: not measured)."""
    frames_gap_low = frames_gap_low or {}
    checks = []
    for m in policy.metrics:
        if champion_version is None:
            vs_champ = Comparison("champion", None, None, policy.min_margin_over_champion, True,
                                  "vs champion: none yet, pass")
        else:
            theirs = champion_values.get(m)
            if theirs is not None and math.isnan(theirs):
                theirs = None  # a NaN champion score is no evidence to defend the alias with
            vs_champ = _compare(values[m], theirs, policy.min_margin_over_champion,
                                policy.higher_is_better, "champion", f"champion v{champion_version}")
        vs_frames = _compare(values[m], frames[m], policy.min_margin_over_frames, policy.higher_is_better,
                             "frames", "bag of frames", frames_gap_low.get(m) if policy.higher_is_better else None)
        checks.append(MetricCheck(m, values[m], vs_champ, vs_frames))
    promote = all(c.passed for c in checks)
    failed = [c.metric for c in checks if not c.passed]
    if promote:
        head = "promoted: no champion yet" if champion_version is None else f"promoted over v{champion_version}"
    else:
        stays = "no champion yet" if champion_version is None else f"champion stays v{champion_version}"
        head = f"challenger only ({stays}): failed {', '.join(failed)}"
    lower = "" if policy.higher_is_better else " (lower is better)"
    reason = head + lower + " | " + " | ".join(c.reason for c in checks)
    return GateDecision(promote, reason, tuple(checks), policy, champion_version)

"""`videossl review`: the champion and the challenger of a registered model, side by side.

What a human needs to overrule (or confirm) the gate: every score with its 95% interval, the gate's
reason for each version, dataset digests, git commits, and the params that differ between the two
runs. Scores come from the `eval/scores.json` each register run logged (complete and nested as
probe-eval wrote it); when that artifact cannot be read, from the version's score tags, and the
output says so. Params come from the register run (every params.yaml key, flattened).
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from videossl import registry
from videossl.eval.scores import INTERVAL, SCORES, VALIDATION, flatten
from videossl.registered_model import DIGEST_PARAM, SCORES_DIGEST_PARAM

# flattened keys shown beside their score (the interval) or not at all (probe hyperparameters, the validation
# accuracy a probe was chosen by)
_INTERVAL = INTERVAL
_HIDDEN_SUFFIXES = _INTERVAL + ("_l2", VALIDATION)
_CELL_LIMIT = 60
_DIGEST_SHOWN = 16  # hex digits of a weights digest: enough to tell two apart at a glance


@dataclass
class Side:
    """One version as the review shows it."""
    role: str
    info: registry.VersionInfo | None
    scores: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)  # params.yaml's, flattened
    weights: str = "—"  # the registration's record of the weights' digest (registered_model.DIGEST_PARAM)
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.role} v{self.info.version}" if self.info else f"{self.role} (none)"


def _load_side(client, role: str, info: registry.VersionInfo | None) -> Side:
    from mlflow.exceptions import MlflowException

    side = Side(role, info)
    if info is None:
        return side
    if not info.run_id:
        side.notes.append(f"v{info.version} has no run: scores from its tags, no params")
        side.scores = info.scores()
        return side
    try:
        side.params = dict(client.get_run(info.run_id).data.params)
        side.weights = side.params.pop(DIGEST_PARAM, "—")[:_DIGEST_SHOWN]
        side.params.pop(SCORES_DIGEST_PARAM, None)  # identity, not a setting: the scores are compared below
    except MlflowException as e:
        side.notes.append(f"v{info.version}: run {info.run_id} unreadable ({e.error_code}): no params")
    try:
        with tempfile.TemporaryDirectory() as tmp, _no_progress_bar():
            path = client.download_artifacts(info.run_id, f"eval/{SCORES}", tmp)
            side.scores = flatten(json.loads(Path(path).read_text()))
    except Exception as e:  # any store or artifact error: the tags still hold every score
        why = (str(e).strip().splitlines() or [""])[0][:120]
        side.notes.append(f"v{info.version}: scores from its tags (the run's eval/{SCORES} could not be "
                          f"read: {type(e).__name__}: {why})")
        side.scores = info.scores()
    return side


@contextmanager
def _no_progress_bar():
    """MLflow draws a download progress bar on stderr; in a printed review it is only noise."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table with padded, aligned columns (readable as plain text too)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def _clip(s: str) -> str:
    s = s.replace("|", "\\|").replace("\n", " ")
    return s if len(s) <= _CELL_LIMIT else s[: _CELL_LIMIT - 1] + "…"


def _is_count(key: str, v: float) -> bool:
    # n_test and other whole numbers above 1 are counts; an accuracy of 1.0 is still a score
    return key.endswith("n_test") or (v.is_integer() and abs(v) > 1)


def _score_cell(scores: dict[str, float], key: str) -> str:
    if key not in scores:
        return "—"
    v = scores[key]
    text = str(int(v)) if _is_count(key, v) else f"{v:.3f}"
    lo, hi = scores.get(key + _INTERVAL[0]), scores.get(key + _INTERVAL[1])
    return text if lo is None or hi is None else f"{text} [{lo:.3f}, {hi:.3f}]"


def _delta(a: dict[str, float], b: dict[str, float], key: str) -> str:
    if key not in a or key not in b:
        return "—"
    d = b[key] - a[key]
    return f"{int(d):+d}" if _is_count(key, a[key]) and _is_count(key, b[key]) else f"{d:+.3f}"


def _when(ms: int | None) -> str:
    if not ms:
        return "—"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def render(name: str, uri: str, champion: Side, challenger: Side, gate_metrics: list[str]) -> str:
    a, b = champion, challenger
    out = [f"# {name}: champion vs challenger", "", f"store: {uri}", ""]
    if a.info is None:
        out.append(f"NO CHAMPION: no version of {name} has passed the gate (register.gate_metrics), "
                   "so models:/" + name + "@champion resolves to nothing.")
    if b.info is None:
        out.append(f"NO CHALLENGER: {name} has no version with the challenger alias.")
    if a.info and b.info and a.info.version == b.info.version:
        out.append(f"v{a.info.version} is both champion and challenger: the newest version is the champion; "
                   "nothing else to compare.")
    out += [f"note: {n}" for n in a.notes + b.notes]
    if b.info is not None:  # the decision first: what the gate did with the newest version, and on what
        decision = b.info.tags.get("gate.decision", "—")
        role = "the champion" if b.info.aliases and registry.CHAMPION in b.info.aliases else "not the champion"
        out.append(f"decision: {b.label} is {role} (gate: {decision})")
        out += [f"  {m}: champion {_score_cell(a.scores, m)}, challenger {_score_cell(b.scores, m)}, "
                f"{_delta(a.scores, b.scores, m)}" for m in gate_metrics]
    if out[-1]:
        out.append("")

    def tag(side: Side, key: str) -> str:
        # provenance is never clipped: a digest or commit cut short cannot be looked up
        return side.info.tags.get(key, "—").replace("|", "\\|") if side.info else "—"

    out += [table(["", a.label, b.label], [
        ["version", *(f"v{s.info.version}" if s.info else "—" for s in (a, b))],
        ["aliases", *(", ".join(s.info.aliases) if s.info else "—" for s in (a, b))],
        ["status", *(s.info.status if s.info else "—" for s in (a, b))],
        ["registered", *(_when(s.info.creation_time) if s.info else "—" for s in (a, b))],
        ["git commit", tag(a, "git_commit"), tag(b, "git_commit")],
        ["dataset digest", tag(a, "dataset_digest"), tag(b, "dataset_digest")],
        ["checkpoint step", tag(a, "checkpoint_step"), tag(b, "checkpoint_step")],
        ["weights sha256", *(s.weights for s in (a, b))],
        ["run", *(s.info.run_id or "—" if s.info else "—" for s in (a, b))],
        ["gate decision", tag(a, "gate.decision"), tag(b, "gate.decision")],
    ]), ""]
    reasons = [f"gate of {s.label}: {s.info.tags['gate.reason']}" for s in (a, b)
               if s.info and "gate.reason" in s.info.tags]  # versions registered before the gate have none
    if reasons:
        out += [*reasons, ""]

    every = sorted(k for k in set(a.scores) | set(b.scores) if not k.endswith(_HIDDEN_SUFFIXES))
    # only what differs (and the gate metrics): ~340 rows of +0.000 hid the few that moved
    keys = [k for k in every if k in gate_metrics or a.scores.get(k) != b.scores.get(k)]
    if keys:
        same = len(every) - len(keys)
        out += ["## Scores that differ: value [95% interval]; * = gate metric (register.gate_metrics)"
                + (f"; {same} equal on both, not shown" if same else ""), ""]
        rows = [[k + (" *" if k in gate_metrics else ""), _score_cell(a.scores, k), _score_cell(b.scores, k),
                 _delta(a.scores, b.scores, k)] for k in keys]
        out += [table(["score", a.label, b.label, "challenger − champion"], rows), ""]
    else:
        out += ["## Scores: none recorded", ""]

    if a.info and b.info:
        differ = sorted(k for k in set(a.params) | set(b.params) if a.params.get(k) != b.params.get(k))
        if differ:
            out += [f"## Params that differ ({len(differ)} of {len(set(a.params) | set(b.params))})", ""]
            out += [table(["param", a.label, b.label],
                          [[k, _clip(a.params.get(k, "—")), _clip(b.params.get(k, "—"))] for k in differ]), ""]
        else:
            out += ["## Params that differ: none", ""]
    return "\n".join(out)


def resolve_uri(cfg, override: str | None) -> str:
    """--tracking-uri, else the store the register step uses: params' tracking.uri, or
    MLFLOW_TRACKING_URI when tracking.uri is null (videossl.tracking)."""
    from videossl import tracking

    return tracking.reader_uri(override or tracking.tracking_uri(cfg.tracking))


def _side_record(side: Side) -> dict | None:
    if side.info is None:
        return None
    info = side.info
    return {"version": info.version, "aliases": list(info.aliases), "status": info.status, "run": info.run_id,
            "registered_ms": info.creation_time, "weights_sha256": side.weights, "tags": dict(info.tags),
            "scores": side.scores, "notes": side.notes}


def record(name: str, uri: str, champion: Side, challenger: Side, gate_metrics: list[str]) -> dict:
    """The review as one JSON-ready object (`videossl review --json`): the same facts `render` prints,
    every score rather than only those that differ."""
    a, b = champion, challenger
    differ = sorted(k for k in set(a.params) | set(b.params) if a.params.get(k) != b.params.get(k)) \
        if a.info and b.info else []
    return {
        "model": name, "store": uri,
        "decision": b.info.tags.get("gate.decision") if b.info else None,
        "challenger_is_champion": bool(b.info and registry.CHAMPION in b.info.aliases),
        "gate_metrics": {m: {"champion": a.scores.get(m), "challenger": b.scores.get(m)} for m in gate_metrics},
        registry.CHAMPION: _side_record(a), registry.CHALLENGER: _side_record(b),
        "params_that_differ": {k: [a.params.get(k), b.params.get(k)] for k in differ},
    }


def _nothing(why: str, as_json: bool) -> int:
    print(json.dumps({"error": why}) if as_json else why)
    return 1


def review(cfg, model_name: str | None = None, tracking_uri: str | None = None, as_json: bool = False) -> int:
    """Print the review (`as_json`: one JSON object); 1 when there is nothing to review (no store, no
    such model), else 0."""
    from mlflow import MlflowClient

    name = model_name or cfg.register.model_name
    uri = resolve_uri(cfg, tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        # opening a missing sqlite file would create an empty store: say where we looked instead
        return _nothing(f"no MLflow store at {uri} (set tracking.uri, MLFLOW_TRACKING_URI with tracking.uri: null, "
                        "or --tracking-uri)", as_json)
    client = MlflowClient(tracking_uri=uri)
    if not client.search_model_versions(f"name='{name}'", max_results=1):
        return _nothing(f"no registered model '{name}' with any version in {uri}", as_json)
    both = registry.champion_and_challenger(client, name)
    champion = _load_side(client, registry.CHAMPION, both[registry.CHAMPION])
    challenger = _load_side(client, registry.CHALLENGER, both[registry.CHALLENGER])
    gate = list(cfg.register.gate_metrics)
    print(json.dumps(record(name, uri, champion, challenger, gate), indent=2) if as_json
          else render(name, uri, champion, challenger, gate))
    return 0

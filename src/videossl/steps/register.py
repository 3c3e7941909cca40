"""Register step: log the encoder to MLflow, register a version with its scores, gate it, write a card.

Reads `data_dir/ingest.json` (dataset digest), `model_dir/encoder.pt` (the video encoder; a
`frame_encoder.pt` beside it is the bag-of-frames baseline, mentioned in the card but not
registered) and `eval_dir/scores.json` (+ `report.md`, `plots/*.png` when present). Writes
`out_dir/registration.json` (the decision, with every check of the gate and its reason) and
`out_dir/model_card.md`. The registry mechanics (write order, rollback) live in `videossl.registry`,
the gate's rule in `videossl.gate`.
"""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from videossl import model_card, registered_model, registry, tracking
from videossl.config import Config
from videossl.data import shards
from videossl.embed import CHECKPOINT_ARTIFACT
from videossl.eval.scores import (CI_HIGH, CI_LOW, HEADLINE, PLOTS, REPORT, SCORES, VIDEO, dotted, flatten,
                                  lookup, split)
from videossl.eval.scores import CHOSEN, SCORED_WEIGHTS
from videossl.gate import Policy, frames_key, gap_low_key
from videossl.registry import RegisterError
from videossl.models.checkpoint import CHECKPOINTS
from videossl.stages import CARD, REGISTRATION, SUBMITTED
from videossl.storage import write_text_atomic

ENCODER, FRAME_ENCODER = CHECKPOINTS["video"], CHECKPOINTS["frames"]

__all__ = ["register", "RegisterError"]


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise RegisterError(f"{what} not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RegisterError(f"{what} {path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise RegisterError(f"{what} {path} must hold a JSON object")
    return data


def _gate_score(scores: dict[str, float], metrics: dict, key: str, why: str, path: Path) -> float:
    """A numeric score of scores.json by flattened key; RegisterError naming the key otherwise."""
    if key in scores:
        return scores[key]
    try:
        raw = lookup(metrics, key)
    except KeyError as e:
        raise RegisterError(f"{why} '{key}' not found in {path} (missing key '{e.args[0]}'; "
                            "register.gate_metrics names task.video[_probe] keys)") from None
    raise RegisterError(f"{why} '{key}' in {path} is not a number: {raw!r}")


def gate_inputs(policy: Policy, metrics: dict, path: Path) -> tuple[dict[str, float], dict[str, float],
                                                                   dict[str, float | None]]:
    """(gate metric -> score, -> its bag-of-frames score, -> the lower bound of the paired gap to the
    bag of frames, None where the benchmark did not measure one); scores are required before any work."""
    scores = flatten(metrics)
    values = {m: _gate_score(scores, metrics, m, "gate metric", path) for m in policy.metrics}
    for m in policy.metrics:  # an interval that does not hold its own score is not a measurement
        gap_point = gap_low_key(m).removesuffix(CI_LOW)
        for key in (m, gap_point):
            low, high, point = scores.get(key + CI_LOW), scores.get(key + CI_HIGH), scores.get(key)
            if point is not None and low is not None and high is not None and not low - 1e-9 <= point <= high + 1e-9:
                raise RegisterError(f"'{key}' in {path} is {point:g} with an interval [{low:g}, {high:g}] that does not "
                                    f"hold it: the scores are not a measurement; re-run probe-eval")
    frames = {m: _gate_score(scores, metrics, frames_key(m), f"bag-of-frames baseline of gate metric {m}:", path)
              for m in policy.metrics}
    return values, frames, {m: scores.get(gap_low_key(m)) for m in policy.metrics}


def _scores_belong_to(metrics: dict, path: Path, encoder, checkpoint: Path) -> str:
    """The digest of the weights in `checkpoint`, computed here; RegisterError when the scores were
    measured on other weights (or do not say which): scores are bound to the model they scored."""
    from videossl.models.checkpoint import state_digest

    actual = state_digest(encoder.state_dict())
    record = metrics.get(SCORED_WEIGHTS)
    scored = record.get("video") if isinstance(record, dict) else None
    if scored is None:
        raise RegisterError(f"{path} does not name the weights it scored ('{SCORED_WEIGHTS}'): scores that cannot "
                            f"be bound to a model are not registered; re-run probe-eval on {checkpoint.parent}")
    if scored != actual:
        raise RegisterError(f"{path} scored the video encoder with weights sha256 {scored[:16]}..., but {checkpoint} "
                            f"holds weights sha256 {actual[:16]}...: re-run probe-eval on this checkpoint")
    return actual


def tagged_scores(scores: dict[str, float], policy: Policy) -> dict[str, float]:
    """The scores a version carries as tags, so the registry page shows them above the fold: per task
    the video model's linear-probe score and its score with the probe chosen on validation, the headline's interval, and each gate metric with its
    interval, its bag-of-frames score and the paired lower bound. Every score is in the run's metrics (what the
    next registration's gate reads: registry.recorded_scores) and its scores table."""
    keep = {k for k in scores if split(k)[1] in (VIDEO, VIDEO + CHOSEN)}
    keep |= {dotted(HEADLINE, VIDEO + CI_LOW), dotted(HEADLINE, VIDEO + CI_HIGH)}
    for m in policy.metrics:
        keep |= {m, m + CI_LOW, m + CI_HIGH, frames_key(m), gap_low_key(m)}
    return {k: v for k, v in scores.items() if k in keep}


def load_encoder(path: Path):
    """(encoder module in eval mode, meta): the one call that knows the checkpoint format."""
    from videossl.models.checkpoint import CheckpointError
    from videossl.models.checkpoint import load_encoder as _load

    if not path.is_file():
        raise RegisterError(f"encoder checkpoint not found: {path}")
    try:
        encoder, meta = _load(path)
    except CheckpointError as e:
        raise RegisterError(str(e)) from e
    return encoder.eval(), meta


def _signature(model):
    """Tensor signature from one forward pass on zeros: uint8 [-1, T, S, S, 3] -> float32 [-1, F]."""
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    x = torch.zeros(1, *model.input_shape, dtype=torch.uint8)
    with torch.no_grad():
        y = model(x)
    return infer_signature(x.numpy(), y.numpy().astype(np.float32))


# What the model's loader (videossl.registered_model) imports, pinned to the versions it was saved
# with. videossl itself travels in the model's code_paths: it is not on an index.
MODEL_REQUIREMENTS = ("torch", "safetensors", "numpy", "pydantic", "PyYAML", "tqdm")


def _pip_requirements() -> list[str]:
    # Explicit requirements: MLflow's inference would load the model again in a subprocess (seconds).
    from importlib.metadata import version

    return [f"{name}=={version(name).split('+')[0]}" for name in MODEL_REQUIREMENTS]


def _code_paths() -> list[str]:
    """The videossl package, copied into the logged model: `mlflow.pyfunc.load_model` puts it on
    sys.path, so the model loads where videossl is not installed."""
    import videossl

    return [str(Path(videossl.__file__).parent)]


def _check_writable(out: Path) -> None:
    """The outputs must be writable before the registry changes: a gate that moved `champion` and
    then could not write its decision would leave the registry and the outputs disagreeing."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-check-"):
            pass
    except OSError as e:
        raise RegisterError(f"cannot write the registration to {out}: {e.strerror or e}") from None


def _write_submitted(out: Path, name: str, digest: str, registered: bool, encoder_sha256: str | None = None) -> None:
    record = {"model_name": name, "dataset_digest": digest, "registered": registered, "encoder_sha256": encoder_sha256}
    write_text_atomic(out / SUBMITTED, json.dumps(record, indent=2, sort_keys=True) + "\n")


def _skip(out: Path, name: str, experiment: dict[str, str], digest: str, commit: str) -> dict:
    """A `dvc exp run` registers nothing unless asked: the stage still writes its outputs, saying so."""
    reason = (f"not registered: DVC experiment {experiment['dvc.experiment']} (register.in_experiments is false; "
              f"-S register.in_experiments=true registers it)")
    result = {"registered": False, "model_name": name, "reason": reason, **experiment,
              "dataset_digest": digest, "git_commit": commit}
    write_text_atomic(out / CARD, f"# {name}: {reason}\n")
    write_text_atomic(out / REGISTRATION, json.dumps(result, indent=2) + "\n")
    _write_submitted(out, name, digest, False)
    print(f"register: {reason}")
    return result


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _already(out: Path, existing: registry.VersionInfo, digest: str, weights: str, uri: str) -> dict:
    """The same weights with the same scores are registered already: say which version, register nothing."""
    reason = (f"the same model as v{existing.version}: weights sha256 {weights[:16]}... and its scores are "
              "registered already; nothing new to register")
    result = {"registered": True, "same_model": True, "model_name": existing.name, "version": existing.version,
              "model_uri": f"models:/{existing.name}/{existing.version}", "run_id": existing.run_id,
              "tracking_uri": uri, "aliases": list(existing.aliases), "reason": reason, "dataset_digest": digest}
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / CARD, existing.description or f"# {existing.name} v{existing.version}: {reason}\n")
    write_text_atomic(out / REGISTRATION, json.dumps(result, indent=2) + "\n")
    _write_submitted(out, existing.name, digest, True, weights)
    print(f"register: {existing.name} v{existing.version}: {reason}")
    return result


def register(cfg: Config, data_dir: str | Path, model_dir: str | Path, eval_dir: str | Path,
             out_dir: str | Path) -> dict:
    """Register the encoder of `model_dir` with the scores of `eval_dir`; returns registration.json's content."""
    data_dir, model_dir, eval_dir, out = Path(data_dir), Path(model_dir), Path(eval_dir), Path(out_dir)
    rcfg = cfg.register

    # Every input is checked before MLflow is touched: a bad input leaves no run and no version.
    ingest = _read_json(data_dir / shards.STATS, "ingest stats")
    digest = ingest.get("digest")
    if not digest:
        raise RegisterError(f"key 'digest' missing in {data_dir / shards.STATS}")
    metrics_path = eval_dir / SCORES
    metrics = _read_json(metrics_path, "scores")
    if metrics.get("dataset_digest") not in (None, digest):  # scores of another dataset never gate this one
        raise RegisterError(f"{metrics_path} was measured on dataset {str(metrics['dataset_digest'])[:12]}, "
                            f"but {data_dir / shards.STATS} is dataset {digest[:12]}: re-run probe-eval")
    policy = Policy.from_config(rcfg)
    gate_values, frames_values, gap_lows = gate_inputs(policy, metrics, metrics_path)
    encoder, meta = load_encoder(model_dir / ENCODER)
    weights = _scores_belong_to(metrics, metrics_path, encoder, model_dir / ENCODER)
    frame_encoder = model_dir / FRAME_ENCODER
    scores = flatten(metrics)
    commit = tracking.git_commit()
    params = tracking.flat_params(cfg.model_dump(mode="json"))
    _check_writable(out)  # the last check before MLflow: nothing above writes anything
    experiment = tracking.dvc_experiment()
    if experiment and not rcfg.in_experiments:
        return _skip(out, rcfg.model_name, experiment, str(digest), commit)

    import mlflow
    from mlflow import MlflowClient

    # The whole registration holds this machine's lock (two first writes to a new sqlite store would
    # both migrate it); the gate's read of the champion and the alias moves also hold the registry's
    # own lock (registry.registry_lock), so registrations on different machines cannot both promote.
    identity = {registered_model.DIGEST_PARAM: weights, registered_model.SCORES_DIGEST_PARAM: _sha256(metrics_path)}
    with registry.registration_lock(tracking.tracking_uri(cfg.tracking), rcfg.model_name):
        tracking.configure(cfg.tracking)
        client = MlflowClient()
        existing = registry.same_model(client, mlflow.get_experiment_by_name(cfg.tracking.experiment).experiment_id,
                                       rcfg.model_name, identity)
        if existing is not None:  # another runner (dvc repro, the KFP DAG) already registered these
            return _already(out, existing, str(digest), weights, tracking.portable_uri(mlflow.get_tracking_uri()))
        with tracking.run(cfg.tracking, "register", tags={"step": "register", "dataset_digest": str(digest)},
                          dataset=(str(data_dir), str(digest))) as active:
            run_id, experiment_id = active.info.run_id, active.info.experiment_id
            uri = mlflow.get_tracking_uri()
            mlflow.log_params(params)
            mlflow.log_artifact(str(metrics_path), "eval")
            if (eval_dir / REPORT).is_file():
                mlflow.log_artifact(str(eval_dir / REPORT), "eval")
            plots = sorted((eval_dir / PLOTS).glob("*.png")) if (eval_dir / PLOTS).is_dir() else []
            for p in plots:
                mlflow.log_artifact(str(p), f"eval/{PLOTS}")

            # the checkpoint itself (tensors and plain values: it loads without unpickling code), for
            # videossl.embed.load_encoder('models:/<name>@<alias>') and `videossl embed`
            mlflow.log_artifact(str(model_dir / ENCODER), CHECKPOINT_ARTIFACT.rsplit("/", 1)[0])
            # the weights' and the scores' digests as params: immutable once logged; every load of this
            # model checks the first, and both together say whether a registration is the same model
            mlflow.log_params(identity)
            with tempfile.TemporaryDirectory(prefix="videossl-model-") as tmp:
                folder = Path(tmp) / "encoder"
                registered_model.write(encoder, meta, folder)
                logged = registered_model.read(folder, weights)  # what a user loads: the same module
                info = mlflow.pyfunc.log_model(
                    name="model", loader_module=registered_model.__name__, data_path=str(folder),
                    signature=_signature(logged), pip_requirements=_pip_requirements(), code_paths=_code_paths(),
                    metadata={k: meta[k] for k in ("variant", "step", "num_frames", "img_size", "model") if k in meta},
                )
            # after the model, linked to it in one write: logged before, MLflow would read back each metric's
            # history to link it (about 2,000 queries, 7 s of the step)
            mlflow.log_metrics({registry.metric_name(k): v for k, v in scores.items() if math.isfinite(v)},
                               model_id=info.model_id)
            step = meta.get("step")
            # every score, as one table artifact (the tags hold the headline)
            mlflow.log_table({"score": sorted(scores), "value": [scores[k] for k in sorted(scores)]},
                             artifact_file="eval/scores_table.json")
            tags = registry.version_tags(tagged_scores(scores, policy), dataset_digest=str(digest),
                                         git_commit=commit, checkpoint_step=step,
                                         extra={"variant": str(meta.get("variant", "video")),
                                                **(experiment or {})})

            def card(version: str, decision: registry.GateDecision) -> str:
                return model_card.render_card(
                    name=rcfg.model_name, version=version, metrics=metrics, decision=decision,
                    dataset_digest=str(digest), git_commit=commit, checkpoint=meta, params=params,
                    frame_encoder=str(frame_encoder) if frame_encoder.is_file() else None, run_id=run_id)

            def summary(version: str, decision: registry.GateDecision) -> str:
                return model_card.render_summary(name=rcfg.model_name, version=version, metrics=metrics,
                                                 decision=decision, run_id=run_id, dataset_digest=str(digest))

            reg = registry.register_version(
                MlflowClient(), rcfg.model_name, logged_model_uri=info.model_uri, model_id=info.model_id,
                run_id=run_id, tags=tags, policy=policy, values=gate_values, frames=frames_values, card=card,
                summary=summary, frames_gap_low=gap_lows, lock=registry.LockSettings.of(rcfg))
            mlflow.log_text(reg.card or "", CARD)
            mlflow.set_tags({"registered_model": rcfg.model_name, "registered_version": reg.version,
                             "gate": "promoted" if reg.decision.promote else "not promoted"})

    d = reg.decision
    result = {
        "registered": True,
        "model_name": reg.name,
        "version": reg.version,
        "model_uri": reg.model_uri,
        "logged_model_uri": reg.logged_model_uri,
        "run_id": run_id,
        "experiment_id": experiment_id,
        "tracking_uri": tracking.portable_uri(uri),  # a copied checkout's summary names its own store
        "aliases": reg.aliases,
        "champion_version": reg.champion_version,
        "previous_champion_version": d.champion_version,
        "promoted": d.promote,
        "reason": d.reason,
        "gate": d.as_dict(),  # every metric, both checks, gains, margins and the reason of each
        "dataset_digest": str(digest),
        "git_commit": commit,
        "checkpoint_step": step,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / CARD, reg.card or "")
    write_text_atomic(out / REGISTRATION, json.dumps(result, indent=2) + "\n")
    _write_submitted(out, reg.name, str(digest), True, weights)
    roles = " + ".join(a for a in (registry.CHAMPION, registry.CHALLENGER) if a in reg.aliases) or "no alias"
    print(f"register: {reg.name} v{reg.version} -> {roles} ({d.reason})")
    return result

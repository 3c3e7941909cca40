"""MLflow Model Registry mechanics: register a version, gate it (champion/challenger aliases).

The model card a version carries is written by `videossl.model_card`.

The gate itself (which scores, which margins, how they combine) is `videossl.gate`; this module
reads the champion's evidence, applies the decision and moves the aliases.

Stages are deprecated in MLflow 3: a version's role is an *alias* (`models:/name@champion`) and its
evidence is its *tags* (every benchmark score, dataset digest, git commit, checkpoint step).

Order of registry writes, and why (the version must never look like a valid champion half-made):

1. The gate is decided first (it reads only the champion's recorded scores: its registration run's
   first logged metrics, `recorded_scores`; tags can be edited), so the version is created with
   *all* its tags, the gate's decision and margins included, in one call: one transaction in the SQL
   store, one request to a tracking server. There is no moment where a version exists with half its
   evidence. It carries `status=registering` until the aliases are set; its `gate.decision` tag says
   what the gate decided, the `champion` alias says whether that decision was carried out.
2. Description (a summary of the model card that fits; the card is the run artifact), the
   `challenger` alias, then `status=ready`.
3. The `champion` alias moves last: it is the commit point, and the only thing that makes a version
   the champion. Consumers resolve `@champion`, so nothing they see changes before this write.

If anything fails after step 1, the aliases are put back where they were and the half-made version is
deleted (deleting also drops any alias on it). If even the delete fails (say the server went away),
the version is tagged `status=failed` as a best effort. A process killed outright between 1 and 3
leaves at worst a version tagged `status=registering` that no alias points to; `champion_and_challenger`
reports the status so `videossl review` can show it.

MLflow has no compare-and-set on aliases, so the gate's read of the champion and the alias moves run
under a lock kept in the registry itself (`registry_lock`): a registered model named
`<name>.registration-lock`, which the store creates for exactly one caller because model names are
unique. Two registrations on different machines (two KFP pods, each with its own home) that share
only the tracking server therefore gate one after the other. A lock whose holder died is broken after
`register.lock_stale_s`.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from videossl.errors import StepError
from videossl.gate import GateDecision, Policy, decide

CHAMPION = "champion"
CHALLENGER = "challenger"
STATUS_TAG = "status"
DESCRIPTION_LIMIT = 5000  # model version description column (String(5000)) in MLflow's SQL store
TAG_VALUE_LIMIT = 5000
_METRIC_NAME_BAD = re.compile(r"[^A-Za-z0-9_\-. /]")


class RegisterError(StepError):
    """The register step cannot run: the message names the missing file or key."""


# ----------------------------------------------------------------------------------------------
# scores


def metric_name(key: str) -> str:
    """A flattened score key as an MLflow metric name (dots are allowed; anything odd becomes '_')."""
    return _METRIC_NAME_BAD.sub("_", key)


# ----------------------------------------------------------------------------------------------
# reading the registry


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: str
    aliases: tuple[str, ...]
    tags: dict[str, str]
    run_id: str | None
    source: str
    description: str | None
    creation_time: int | None

    @property
    def status(self) -> str:
        return self.tags.get(STATUS_TAG, "unknown")

    def score(self, key: str) -> float | None:
        raw = self.tags.get(key)
        try:
            return None if raw is None else float(raw)
        except ValueError:
            return None

    def scores(self) -> dict[str, float]:
        keys = [k for k in self.tags.get("score_keys", "").split(",") if k]
        return {k: v for k in keys if (v := self.score(k)) is not None}


def recorded_scores(client, version: VersionInfo, keys) -> dict[str, float | None]:
    """A version's scores as its registration run logged them first (the run's metric history), never
    its tags: a tag can be edited or deleted to let a weaker model through; the first logged value of a
    metric stays what it was. None where the run has no such metric (or there is no run)."""
    out: dict[str, float | None] = {}
    for key in keys:
        history = client.get_metric_history(version.run_id, metric_name(key)) if version.run_id else []
        out[key] = min(history, key=lambda m: (m.timestamp, m.step)).value if history else None
    return out


def _info(mv) -> VersionInfo:
    return VersionInfo(name=mv.name, version=str(mv.version), aliases=tuple(sorted(mv.aliases or [])),
                       tags=dict(mv.tags or {}), run_id=mv.run_id, source=mv.source,
                       description=mv.description, creation_time=mv.creation_timestamp)


def aliases_of(client, name: str) -> dict[str, str]:
    """{alias: version} of a registered model; {} when the model does not exist yet."""
    from mlflow.exceptions import MlflowException

    try:
        rm = client.get_registered_model(name)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise
    return {a: str(v) for a, v in (rm.aliases or {}).items()}


def same_model(client, experiment_id: str, name: str, params: dict[str, str]) -> VersionInfo | None:
    """The version of `name` whose registration run logged exactly `params` (the weights' and the
    scores' digests): a registration of the same model scored the same way. Runs' params are
    immutable, so an edited tag cannot make another model look like this one."""
    from mlflow.exceptions import MlflowException

    query = " and ".join([f"tags.registered_model = '{name}'", *(f"params.{k} = '{v}'" for k, v in params.items())])
    for run in client.search_runs([experiment_id], query, max_results=10):
        version = run.data.tags.get("registered_version")
        try:
            mv = client.get_model_version(name, version) if version else None
        except MlflowException:  # the version was deleted: register anew
            continue
        if mv is not None and mv.run_id == run.info.run_id:
            return _info(mv)
    return None


def champion_and_challenger(client, name: str) -> dict[str, VersionInfo | None]:
    """{"champion": VersionInfo | None, "challenger": VersionInfo | None} of registered model `name`."""
    aliases = aliases_of(client, name)
    out: dict[str, VersionInfo | None] = {}
    for alias in (CHAMPION, CHALLENGER):
        v = aliases.get(alias)
        out[alias] = _info(client.get_model_version(name, v)) if v is not None else None
    return out


# ----------------------------------------------------------------------------------------------
# writing the registry


@dataclass
class Registration:
    name: str
    version: str
    model_uri: str            # models:/name/version
    logged_model_uri: str     # models:/m-<id>, what log_model returned
    decision: GateDecision
    aliases: list[str] = field(default_factory=list)
    champion_version: str | None = None  # after the gate
    card: str | None = None


def version_tags(scores: dict[str, float], *, dataset_digest: str, git_commit: str,
                 checkpoint_step: int | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The given scores (flattened key -> value: the register step passes its headline,
    `steps.register.tagged_scores`) plus provenance, as model version tags (the gate's tags are
    added by `register_version`, which decides it)."""
    tags = {k: repr(float(v)) for k, v in scores.items()}
    tags.update({
        "score_keys": ",".join(sorted(scores))[:TAG_VALUE_LIMIT],
        "dataset_digest": dataset_digest,
        "git_commit": git_commit,
        "checkpoint_step": str(checkpoint_step) if checkpoint_step is not None else "unknown",
        STATUS_TAG: "registering",
    })
    tags.update(extra or {})
    return {k: str(v)[:TAG_VALUE_LIMIT] for k, v in tags.items()}


def ensure_registered_model(client, name: str, description: str | None = None) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description=description)
    except MlflowException as e:
        if e.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise


def _restore_alias(client, name: str, alias: str, version: str | None) -> None:
    if version is not None:
        client.set_registered_model_alias(name, alias, version)
    elif alias in aliases_of(client, name):
        client.delete_registered_model_alias(name, alias)


LOCK_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "videossl" / "locks"


def lock_path(tracking_uri: str, name: str) -> Path:
    """The lock file of one registered model in one store: beside a sqlite store's file (whoever can
    write the store can write there), else under LOCK_DIR (serialises this machine's registrations)."""
    tag = hashlib.sha256(f"{tracking_uri}|{name}".encode()).hexdigest()[:16]
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        return db.parent / f".{db.name}.{tag}.lock"
    return LOCK_DIR / f"{tag}.lock"


@contextmanager
def registration_lock(tracking_uri: str, name: str) -> Iterator[None]:
    """One registration at a time per (store, model): without it two concurrent gates both read "no
    champion" (or the same champion) and both promote, and two first writes to a new sqlite store
    both run its schema migrations and break it. An exclusive flock, released by the kernel even when
    the process is killed."""
    path = lock_path(tracking_uri, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


LOCK_SUFFIX = ".registration-lock"  # the registered model that is the registry-side lock of <name>
LOCK_POLL_S = 0.5                   # how often a waiting registration asks whether the lock is free


@dataclass(frozen=True)
class LockSettings:
    wait_s: float    # how long a registration waits for another's lock before giving up
    stale_s: float   # a lock older than this is a dead holder's: broken

    @classmethod
    def of(cls, rcfg) -> "LockSettings":
        return cls(wait_s=rcfg.lock_wait_s, stale_s=rcfg.lock_stale_s)


def _is(e, *codes: str) -> bool:
    return getattr(e, "error_code", None) in codes


@contextmanager
def registry_lock(client, name: str, holder: str, settings: LockSettings) -> Iterator[None]:
    """Hold `<name>.registration-lock` in the registry while the block runs: created by exactly one
    caller (the store refuses a second model of the same name), deleted at the end. A waiting caller
    polls; a lock older than `settings.stale_s` by the server's clock (its holder was killed) is
    deleted and taken; after `settings.wait_s` it gives up with RegisterError naming the holder."""
    from mlflow.exceptions import MlflowException

    lock = name + LOCK_SUFFIX
    deadline = time.monotonic() + settings.wait_s
    while True:
        record = json.dumps({"holder": holder, "since_unix": round(time.time(), 3)})
        try:
            client.create_registered_model(lock, description=record)
            break
        except MlflowException as e:
            if not _is(e, "RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        try:
            held = client.get_registered_model(lock)
        except MlflowException as e:
            if _is(e, "RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
                continue  # released between our create and this read: try again at once
            raise
        age_s = time.time() - held.creation_timestamp / 1000
        if age_s > settings.stale_s:
            logging.getLogger(__name__).warning("breaking the registration lock of %s held %.0f s by %s",
                                                name, age_s, held.description)
            _delete_model(client, lock)
            continue
        if time.monotonic() > deadline:
            raise RegisterError(f"the registration lock of {name} ({lock}) is held by {held.description}; waited "
                                f"{settings.wait_s:g} s (register.lock_wait_s). A killed holder's lock is broken after "
                                f"register.lock_stale_s = {settings.stale_s:g} s, or delete the registered model {lock}")
        time.sleep(LOCK_POLL_S)
    try:
        yield
    finally:
        _delete_model(client, lock)


def _delete_model(client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.delete_registered_model(name)
    except MlflowException as e:
        if not _is(e, "RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            raise


def lock_holder(run_id: str) -> str:
    """Who holds a registration lock, as its record names it: machine, process, MLflow run."""
    return f"{socket.gethostname()} pid {os.getpid()} run {run_id}"


def register_version(client, name: str, *, logged_model_uri: str, model_id: str | None, run_id: str,
                     tags: dict[str, str], policy: Policy, values: dict[str, float], frames: dict[str, float],
                     card=None, summary=None, frames_gap_low: dict[str, float | None] | None = None,
                     lock: LockSettings | None = None) -> Registration:
    """Gate, create the version with its tags, move aliases. See the module docstring for the order.

    `values` / `frames`: each gate metric -> the new model's score / its bag-of-frames baseline's;
    `frames_gap_low`: the paired gap's 95% lower bound where the benchmark measured it.

    `card(version: str, decision: GateDecision) -> str` renders the model card once the version number
    is known (returned on `Registration.card`; the step logs it whole as an artifact); `summary`, with
    the same arguments, the version's description (the card itself when no summary is given).
    All of it holds `registry_lock` (`lock`: its settings, register's defaults when None).
    """
    if lock is None:
        from videossl.config import RegisterConfig

        lock = LockSettings.of(RegisterConfig())
    ensure_registered_model(client, name, description="videossl video encoder (self-supervised); "
                                                       "@champion is the gated best, @challenger the newest")
    with registry_lock(client, name, lock_holder(run_id), lock):
        before = aliases_of(client, name)
        prev_champion = before.get(CHAMPION)
        champ_values: dict[str, float | None] = {}
        if prev_champion is not None:
            champ_values = recorded_scores(client, _info(client.get_model_version(name, prev_champion)), policy.metrics)
        decision = decide(policy, values, frames, prev_champion, champ_values, frames_gap_low)

        # flipped to "ready" once the challenger alias is set
        tags = {**tags, **{k: v[:TAG_VALUE_LIMIT] for k, v in decision.tags().items()}, STATUS_TAG: "registering"}
        mv = client.create_model_version(name=name, source=logged_model_uri, run_id=run_id, tags=tags,
                                         model_id=model_id)
        version = str(mv.version)
        if model_id:
            link_logged_model(client, model_id, name, version)
        reg = Registration(name=name, version=version, model_uri=f"models:/{name}/{version}",
                           logged_model_uri=logged_model_uri, decision=decision)
        try:
            if card is not None:
                reg.card = card(version, decision)
            text = summary(version, decision) if summary is not None else reg.card
            if text:
                if len(text) > DESCRIPTION_LIMIT:
                    raise RegisterError(f"the description of {name} v{version} has {len(text)} characters; MLflow's "
                                        f"SQL store keeps {DESCRIPTION_LIMIT}: pass a shorter summary")
                client.update_model_version(name, version, description=text)
            client.set_registered_model_alias(name, CHALLENGER, version)
            client.set_model_version_tag(name, version, STATUS_TAG, "ready")
            if decision.promote:
                client.set_registered_model_alias(name, CHAMPION, version)  # the commit point
        except BaseException:
            _roll_back(client, name, version, before)
            raise
        after = aliases_of(client, name)
        reg.aliases = sorted(a for a, v in after.items() if v == version)
        reg.champion_version = after.get(CHAMPION)
        return reg


LOGGED_MODEL_VERSIONS_TAG = "mlflow.modelVersions"  # what mlflow.register_model sets: the UI's link


def link_logged_model(client, model_id: str, name: str, version: str) -> None:
    """Record the version on its logged model, as `mlflow.register_model` does (the version is made
    with create_model_version so that its tags and the gate go in one call): the logged model's page
    then links its registered version instead of saying "Not registered"."""
    import json

    model = client.get_logged_model(model_id)
    versions = json.loads(model.tags.get(LOGGED_MODEL_VERSIONS_TAG, "[]"))
    # a tracking server links it itself (with the version as a number); the embedded store does not
    if any(v.get("name") == name and str(v.get("version")) == str(version) for v in versions):
        return
    versions.append({"name": name, "version": version})
    client.set_logged_model_tags(model_id, {LOGGED_MODEL_VERSIONS_TAG: json.dumps(versions)})


def _roll_back(client, name: str, version: str, before: dict[str, str]) -> None:
    """Put champion/challenger back where they were, then delete the half-made version."""
    log = logging.getLogger(__name__)
    for alias in (CHAMPION, CHALLENGER):
        try:
            _restore_alias(client, name, alias, before.get(alias))
        except Exception as e:  # keep going: deleting the version below also drops its aliases
            log.error("rollback: could not restore alias %s of %s: %s", alias, name, e)
    try:
        client.delete_model_version(name, version)
        log.error("rolled back: deleted half-registered %s v%s", name, version)
    except Exception as e:
        log.error("rollback: could not delete %s v%s (%s); tagging it status=failed", name, version, e)
        try:
            client.set_model_version_tag(name, version, STATUS_TAG, "failed")
        except Exception as e2:
            log.error("rollback: could not tag %s v%s as failed either: %s", name, version, e2)

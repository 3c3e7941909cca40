"""Least privilege on the tracking server: one MLflow user per role, each allowed what its steps do.

- the **admin** (the server's own, Secret `cluster.secrets.mlflow_admin`): only the server and this
  grant (`videossl grant-access`, the Job k8s/base/mlflow-access.yaml) use it;
- **runs** (Secret `cluster.secrets.mlflow`: pretrain, probe-eval, the training job): logs runs in the
  pipeline's experiment; reads the registry, never writes it;
- **register** (Secret `cluster.secrets.mlflow_register`, the register step only): logs its run and
  manages the registered model (versions, aliases, tags) and its registration lock.

MLflow's basic-auth app enforces it: the shipped `default_permission = READ` (k8s/base/basic_auth.ini)
is what every user has on what others made; `grant` adds the rest. Idempotent: run it again after a
password or model name changes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from videossl.errors import StepError

# Where `videossl grant-access` reads each role's login (the Job maps each Secret's keys to these).
ROLE_ENV = {"runs": ("VIDEOSSL_RUNS_USERNAME", "VIDEOSSL_RUNS_PASSWORD"),
            "register": ("VIDEOSSL_REGISTER_USERNAME", "VIDEOSSL_REGISTER_PASSWORD")}
EDIT, MANAGE = "EDIT", "MANAGE"


class AccessError(StepError):
    pass


@dataclass(frozen=True)
class Role:
    username: str
    password: str


def roles_from_env(env=os.environ) -> dict[str, Role]:
    missing = [v for pair in ROLE_ENV.values() for v in pair if not env.get(v)]
    if missing:
        raise AccessError(f"grant-access needs {', '.join(missing)} (each role's login, from its Secret)")
    return {role: Role(env[u], env[p]) for role, (u, p) in ROLE_ENV.items()}


def _ensure_user(auth, role: Role) -> None:
    from mlflow.exceptions import MlflowException

    try:
        auth.create_user(role.username, role.password)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        auth.update_user_password(role.username, role.password)


def _set_permission(auth, username: str, kind: str, resource: str, permission: str) -> None:
    """Exactly `permission` for `username` on the resource, whatever it held before (the server
    refuses a second grant: an existing one is revoked and granted again)."""
    from mlflow.exceptions import MlflowException

    try:
        auth.grant_user_permission(username, kind, resource, permission)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        auth.revoke_user_permission(username, kind, resource)
        auth.grant_user_permission(username, kind, resource, permission)


def grant(tracking_uri: str, experiment: str, model_name: str, roles: dict[str, Role]) -> dict[str, dict[str, str]]:
    """As the admin (MLFLOW_TRACKING_USERNAME / _PASSWORD): create the role users, the experiment and
    the registered model, and grant: runs EDIT on the experiment; register EDIT on the experiment and
    MANAGE on the model. Returns role -> resource -> permission, as granted."""
    from mlflow import MlflowClient
    from mlflow.server.auth.client import AuthServiceClient

    from videossl.registry import ensure_registered_model

    auth = AuthServiceClient(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    for role in roles.values():
        _ensure_user(auth, role)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    ensure_registered_model(client, model_name)
    plan = {"runs": {("experiment", experiment_id): EDIT},
            "register": {("experiment", experiment_id): EDIT, ("registered_model", model_name): MANAGE}}
    for role, grants in plan.items():
        for (kind, resource), permission in grants.items():
            _set_permission(auth, roles[role].username, kind, resource, permission)
    return {role: {f"{kind} {resource}": p for (kind, resource), p in grants.items()} for role, grants in plan.items()}

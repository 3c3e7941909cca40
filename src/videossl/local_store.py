"""A local MLflow store that moves with its project.

MLflow writes absolute `file://` artifact locations into its sqlite store (experiments, runs, logged
models, model versions), so a copied checkout would read from, and write into, the original's
`mlartifacts/`, and a moved one would find nothing. Each experiment this project creates carries
ROOT_TAG, the folder its store file was in when those paths were written; opening the store from
another folder rebases every path under the recorded folder onto the store's folder, in one sqlite
transaction, before MLflow reads it. Paths outside the project (an absolute artifacts folder
elsewhere, s3://) are left as they are.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

ROOT_TAG = "videossl.store_root"
SQLITE = "sqlite:///"
# every column in which MLflow 3's sqlite schema records an artifact location
PATH_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                ("logged_models", "artifact_location"), ("model_versions", "source"),
                ("model_versions", "storage_location"))
BUSY_TIMEOUT_S = 60.0  # another step may be writing the store


def sqlite_file(uri: str) -> Path | None:
    """The store file of a sqlite tracking URI (absolute), or None for any other store."""
    if not uri.startswith(SQLITE):
        return None
    return Path(uri[len(SQLITE):]).resolve()


def root_of(uri: str) -> str | None:
    """The folder ROOT_TAG records for a local store (its file's folder), None for other stores."""
    db = sqlite_file(uri)
    return str(db.parent) if db else None


def relocate(uri: str) -> list[str]:
    """Rebase a sqlite store's artifact paths onto the folder its file is in now; returns the old
    folders it rebased (none when the store is where it was written, or is not a local file)."""
    db = sqlite_file(uri)
    if db is None or not db.is_file():
        return []
    new = str(db.parent)
    con = sqlite3.connect(db, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "experiment_tags" not in tables:
            return []
        olds = sorted({r[0] for r in con.execute("SELECT value FROM experiment_tags WHERE key=?", (ROOT_TAG,))}
                      - {new})
        if not olds:
            return []
        con.execute("BEGIN IMMEDIATE")  # one writer rebases; a concurrent opener sees it done
        for old in olds:
            for before, after in ((Path(old).as_uri() + "/", Path(new).as_uri() + "/"), (old + "/", new + "/")):
                for table, column in PATH_COLUMNS:
                    if table in tables:
                        con.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                                    f"WHERE substr({column}, 1, ?) = ?", (after, len(before) + 1, len(before), before))
        con.execute("UPDATE experiment_tags SET value = ? WHERE key = ?", (new, ROOT_TAG))
        con.execute("COMMIT")
        return olds
    finally:
        con.close()

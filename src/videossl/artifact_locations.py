"""Datasets and models travel between KFP tasks as `dsl.Dataset` / `dsl.Model` artifacts that point at
their params-addressed folders (`videossl.data.versioning.output_uri`), so the KFP UI shows lineage
(which dataset trained which model, which model was evaluated and registered) while the data itself
is never copied into KFP's artifact store. The location is in the artifact's metadata (what the UI
shows, and what the next task reads) and in its one small file.
"""
from __future__ import annotations

import json
from pathlib import Path

LOCATION = "location"


def publish(artifact, location: str, **metadata) -> None:
    """Make the output `artifact` point at `location`; `metadata`: a few plain values for the UI."""
    artifact.metadata.update({LOCATION: location, **metadata})
    path = Path(artifact.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({LOCATION: location, **metadata}, indent=2, sort_keys=True) + "\n")


def location(artifact) -> str:
    """Where the input `artifact` points (its metadata, else its file)."""
    loc = (artifact.metadata or {}).get(LOCATION)
    if not loc:
        try:
            loc = json.loads(Path(artifact.path).read_text()).get(LOCATION)
        except (OSError, ValueError):
            loc = None
    if not loc:
        raise ValueError(f"artifact {artifact.name or artifact.uri} names no '{LOCATION}': it was not made by "
                         f"a videossl component")
    return str(loc)

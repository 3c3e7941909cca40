"""Labelled datasets as the field lists them: the `path label` list of VideoMAE and V-JEPA.

An ingest source `list:<file>` (local or s3://) names one video a line:

    path label [split] [group]

- `path`: the video, relative to the list's folder (or absolute, or s3://);
- `label`: its class, a name or an index (one token: SSv2 and Kinetics names with spaces are written
  with underscores, as their converters do);
- `split` (optional): train | val | test; the list's own split wins over the drawn one;
- `group` (optional): the unit a split never cuts apart (cuts of one source film, one YouTube id);
  without one, each video is its own group.

Blank lines and lines starting with `#` are skipped. A malformed line or a missing file is reported
with its line number and quarantined; the other lines go on. Videos from a list are `LABELLED`:
evaluation data for the `classification` task, never pretraining data.
"""
from __future__ import annotations

import posixpath
from pathlib import Path

from videossl import storage
from videossl.data import shards

PREFIX = "list:"
CLASS = "class"  # the label key a list's class goes under in the manifest (eval/tasks.py reads it)


def is_list(source: str) -> bool:
    return source.startswith(PREFIX)


def _resolve(base: str, path: str) -> str:
    """A list entry's path: absolute and s3:// as written, else relative to the list's folder."""
    if storage.is_s3(path) or path.startswith("/"):
        return path
    if storage.is_s3(base):
        return posixpath.join(base.rsplit("/", 1)[0], path)
    return str(Path(base).parent / path)


def read_text(uri: str, endpoint_url: str | None) -> str:
    """The list's text (FileNotFoundError / OSError when it cannot be read: the source fails whole)."""
    if storage.is_s3(uri):
        return storage.read_bytes(uri, endpoint_url).decode("utf-8")
    path = Path(uri)
    if not path.is_file():
        raise FileNotFoundError(f"list {uri!r} is not a file")
    return path.read_text(encoding="utf-8")


def expand_list(source: str, endpoint_url: str | None = None):
    """(VideoInputs, Rejected) of a `list:` source; each rejected line names its number and why."""
    from videossl.data.sources import VIDEO_EXTENSIONS, Rejected, VideoInput

    uri = source[len(PREFIX):]
    name = posixpath.basename(uri.rstrip("/")) or uri
    inputs, rejected, seen = [], [], {}
    for number, raw in enumerate(read_text(uri, endpoint_url).splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{uri}:{number}"
        fields = line.split()
        if not 2 <= len(fields) <= 4:
            rejected.append(Rejected(where, f"malformed line {number} of {name}: 'path label [split] [group]' "
                                            f"expected, got {len(fields)} field(s): {line[:80]!r}"))
            continue
        path, label, *rest = fields
        split = rest[0] if rest else None
        if split is not None and split not in shards.SPLITS:
            rejected.append(Rejected(where, f"line {number} of {name}: split {split!r} is not one of {shards.SPLITS}"))
            continue
        video = _resolve(uri, path)
        if not video.lower().endswith(VIDEO_EXTENSIONS):
            rejected.append(Rejected(where, f"line {number} of {name}: {path!r} is not a video file "
                                            f"({', '.join(VIDEO_EXTENSIONS)})"))
            continue
        if not storage.is_s3(video) and not Path(video).is_file():
            rejected.append(Rejected(video, f"line {number} of {name}: file not found"))
            continue
        if video in seen:
            rejected.append(Rejected(where, f"line {number} of {name}: {path!r} is listed again (first on line "
                                            f"{seen[video]})"))
            continue
        seen[video] = number
        sid = f"{name}/{path}"
        group = f"{name}/{rest[1]}" if len(rest) > 1 else sid
        labels = {CLASS: label, **({"split": split} if split else {})}
        inputs.append(VideoInput(sid, group, shards.LABELLED, video, labels))
    return inputs, rejected

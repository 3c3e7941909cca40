"""Labelled datasets as the field lists them: the `path label` list of VideoMAE and V-JEPA,
Something-Something v2's JSON and Kinetics' CSV.

An ingest source `list:<file>` (local or s3://) names one video a line:

    path label [split] [group]

- `path`: the video, relative to the list's folder (or absolute, or s3://);
- `label`: its class, a name or an index (one token: SSv2 and Kinetics names with spaces are written
  with underscores, as their converters do);
- `split` (optional): train | val | test; the list's own split wins over the drawn one;
- `group` (optional): the unit a split never cuts apart (cuts of one source film, one YouTube id);
  without one, each video is its own group.

Blank lines and lines starting with `#` are skipped. A malformed line or a missing file is reported
with its line number and quarantined; the other lines go on. `ssv2:<something-something-v2-train.json>`
and `kinetics:<train.csv>` read the datasets' own files as they unpack (`expand_ssv2`,
`expand_kinetics`). Videos from any of them are `LABELLED`: evaluation data for the `classification`
task, never pretraining data.
"""
from __future__ import annotations

import posixpath
from pathlib import Path

from videossl import storage
from videossl.data import shards

PREFIX, SSV2_PREFIX, KINETICS_PREFIX = "list:", "ssv2:", "kinetics:"
PREFIXES = (PREFIX, SSV2_PREFIX, KINETICS_PREFIX)  # every labelled-dataset source (config validates them)
CLASS = "class"  # the label key a list's class goes under in the manifest (eval/tasks.py reads it)
SSV2_LABELS = "something-something-v2-labels.json"  # template -> class index, beside the annotations
SSV2_VIDEOS = "20bn-something-something-v2"         # the videos' folder as the dataset unpacks (<id>.webm)
KINETICS_SPLITS = {"train": "train", "val": "val", "validate": "val", "validation": "val", "test": "test"}


def is_list(source: str) -> bool:
    """Any labelled-dataset source: list:, ssv2:, kinetics:."""
    return source.startswith(PREFIXES)


def _beside(uri: str, *parts: str) -> str:
    """A path relative to the folder of `uri` (a local file or an s3:// object)."""
    if storage.is_s3(uri):
        return posixpath.join(uri.rsplit("/", 1)[0], *parts)
    return str(Path(uri).parent.joinpath(*parts))


def _resolve(base: str, path: str) -> str:
    """A list entry's path: absolute and s3:// as written, else relative to the list's folder."""
    return path if storage.is_s3(path) or path.startswith("/") else _beside(base, path)


def _present(video: str) -> bool:
    """A local video exists (an s3:// one is checked when it is fetched: a missing key is quarantined then)."""
    return storage.is_s3(video) or Path(video).is_file()


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
        if not _present(video):
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


# --- the field's own annotation files ------------------------------------------------------------

def _ssv2_class(template: str) -> str:
    """SSv2's class: its template with the placeholders' brackets dropped (as its labels file keys it),
    one token (spaces as underscores, like a list's labels)."""
    return template.replace("[", "").replace("]", "").replace(" ", "_")


def expand_ssv2(source: str, endpoint_url: str | None = None):
    """Something-Something v2: `ssv2:<annotations.json>` (train or validation), its labels file
    (SSV2_LABELS) and videos (SSV2_VIDEOS/<id>.webm) beside it. Class: the template; group: the video."""
    import json

    from videossl.data.sources import Rejected, VideoInput

    uri = source[len(SSV2_PREFIX):]
    name = posixpath.basename(uri)
    try:
        entries = json.loads(read_text(uri, endpoint_url))
        known = set(json.loads(read_text(_beside(uri, SSV2_LABELS), endpoint_url)))
    except json.JSONDecodeError as e:
        raise OSError(f"{uri} or its {SSV2_LABELS} is not valid JSON ({e})") from None
    if not isinstance(entries, list):
        raise OSError(f"{uri} holds a JSON {type(entries).__name__}, not SSv2's list of videos")
    inputs, rejected = [], []
    for number, entry in enumerate(entries, start=1):
        where = f"{uri}:{number}"
        if not isinstance(entry, dict) or "id" not in entry or "template" not in entry:
            rejected.append(Rejected(where, f"entry {number} of {name}: 'id' and 'template' expected"))
            continue
        template = entry["template"].replace("[", "").replace("]", "")
        if template not in known:
            rejected.append(Rejected(where, f"entry {number} of {name}: template {entry['template']!r} is not in "
                                            f"{SSV2_LABELS}"))
            continue
        video = _beside(uri, SSV2_VIDEOS, f"{entry['id']}.webm")
        if not _present(video):
            rejected.append(Rejected(video, f"entry {number} of {name}: file not found"))
            continue
        sid = f"ssv2/{entry['id']}"
        inputs.append(VideoInput(sid, sid, shards.LABELLED, video, {CLASS: _ssv2_class(entry["template"])}))
    return inputs, rejected


def expand_kinetics(source: str, endpoint_url: str | None = None):
    """Kinetics: `kinetics:<split.csv>` with its header (label, youtube_id, time_start, time_end[, split]);
    videos `<youtube_id>_<start:06d>_<end:06d>.mp4` beside the CSV, in a folder per label or not.
    Class: the label; group: the YouTube id (clips of one upload never straddle a split)."""
    import csv
    import io

    from videossl.data.sources import Rejected, VideoInput

    uri = source[len(KINETICS_PREFIX):]
    name = posixpath.basename(uri)
    rows = csv.DictReader(io.StringIO(read_text(uri, endpoint_url)))
    missing = {"label", "youtube_id", "time_start", "time_end"} - set(rows.fieldnames or ())
    if missing:
        raise OSError(f"{uri}: Kinetics' header needs {sorted(missing)} (label, youtube_id, time_start, time_end[, split])")
    inputs, rejected = [], []
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"{uri}:{number}"
        try:
            start, end = int(float(row["time_start"])), int(float(row["time_end"]))
        except (TypeError, ValueError):
            rejected.append(Rejected(where, f"line {number} of {name}: time_start/time_end are not numbers"))
            continue
        split = KINETICS_SPLITS.get((row.get("split") or "").strip().lower())
        label = (row["label"] or "").strip().replace(" ", "_")
        stem = f"{row['youtube_id']}_{start:06d}_{end:06d}.mp4"
        candidates = [_beside(uri, label, stem), _beside(uri, (row["label"] or "").strip(), stem), _beside(uri, stem)]
        video = next((c for c in candidates if _present(c)), None)
        if not label or video is None:
            rejected.append(Rejected(where, f"line {number} of {name}: " + ("no label" if not label else
                                            f"{stem} not found (beside the CSV or in its label's folder)")))
            continue
        sid = f"kinetics/{stem}"
        labels = {CLASS: label, **({"split": split} if split else {})}
        inputs.append(VideoInput(sid, f"kinetics/{row['youtube_id']}", shards.LABELLED, video, labels))
    return inputs, rejected


def expand(source: str, endpoint_url: str | None = None):
    """(VideoInputs, Rejected) of any annotated source: list:, ssv2:, kinetics:."""
    if source.startswith(SSV2_PREFIX):
        return expand_ssv2(source, endpoint_url)
    if source.startswith(KINETICS_PREFIX):
        return expand_kinetics(source, endpoint_url)
    return expand_list(source, endpoint_url)

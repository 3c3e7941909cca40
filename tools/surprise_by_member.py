"""Which member of each matched set a predictor finds least surprising, by the member's name.

probe-eval scores a predictor's surprise by whether the possible members of a set surprise it less than
the impossible ones (eval/surprise.py). Below chance says the predictor prefers something impossible;
this shows what: per member name (future: true, turned_left, turned_right, reversed_gravity), the mean
surprise on the task's test sets and the mean rank within a set (0 = least surprising).

    python tools/surprise_by_member.py [--task future] [--data data/ingest] ENCODER_PT...

ENCODER_PT: a pretrain output's encoder.pt (e.g. outputs/study/runs/mae/future-96tflop/pretrain/encoder.pt).
"""
from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from videossl.config import load_config
from videossl.data.shards import ClipStore
from videossl.eval.benchmark import _test_clips, tasks_of
from videossl.eval.objective_heads import load_objective
from videossl.eval.surprise import held_frame_surprise, predictive_part, surprise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("encoders", nargs="+")
    ap.add_argument("--task", default="future")
    ap.add_argument("--data", default="data/ingest")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    cfg, store = load_config(args.params), ClipStore(args.data)
    [task] = tasks_of(cfg, store, [args.task])
    items = task.items["test"]
    names = [next(s["member"] for s in store.by_id[i.clip.video].labels["segments"] if s["start"] == i.clip.start)
             for i in items]
    clips = _test_clips(store, task)
    held = False
    for path in args.encoders:
        objective, _ = load_objective(path)
        part = predictive_part(objective)
        if part is None:
            print(f"{path}: its objective has no predictor")
            continue
        if not held:  # the predictor that learned nothing, once: the last seen frame held
            _print("last frame held (no learning)", args.task, items, names, held_frame_surprise(clips, part))
            held = True
        _print(path, args.task, items, names, surprise(part, clips, cfg.probe_eval.batch_size))


def _print(label: str, task: str, items: list, names: list[str], s: np.ndarray) -> None:
    sets: dict[str, dict[str, float]] = defaultdict(dict)
    for item, name, value in zip(items, names, s):
        sets[item.clip.video][name] = float(value)
    ranks = defaultdict(list)
    for members in sets.values():
        for rank, name in enumerate(sorted(members, key=members.get)):
            ranks[name].append(rank)
    print(f"{label} ({len(sets)} sets of {task}): member, mean surprise, mean rank (0 = least surprising)")
    for name in sorted(ranks, key=lambda n: np.mean(ranks[n])):
        print(f"  {name:18s} {np.mean([v for n, v in zip(names, s) if n == name]):.4f}  {np.mean(ranks[name]):.2f}")


if __name__ == "__main__":
    main()

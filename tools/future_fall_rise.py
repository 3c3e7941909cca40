"""What a predictor expects after a body's last seen frame on freshly drawn `future` sets, split by whether
the body was falling or rising when its future was hidden.

`future`'s members share a context and differ in gravity afterwards (true, turned a quarter turn either
way, reversed). A falling body under reversed gravity slows down and stays near where it was last seen,
so a predictor that learned nothing (the last seen frame held) prefers the reversed future for falling
bodies and the true one for rising bodies. This draws sets with the task's own generator
(`families.make_future`, uncompressed, at the ingest canvas), records each body's motion along gravity
at the switch, and prints per member the mean rank of its surprise within a set (0 = least surprising)
for the held frame and each encoder's predictor, falling and rising apart.

    python tools/future_fall_rise.py [--sets 400] [--seed 2] ENCODER_PT...
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from videossl.config import load_config
from videossl.data.synthetic import canvas
from videossl.data.synthetic import families as F
from videossl.data.synthetic import physics as P
from videossl.eval.objective_heads import load_objective
from videossl.eval.surprise import held_frame_surprise, predictive_part, surprise

MEMBERS = ("true", "turned_left", "turned_right", "reversed_gravity")  # the control repeats the true frames


def draw(n: int, seed: int, canvas: F.Canvas) -> tuple[torch.Tensor, np.ndarray]:
    """n sets: their members' clips [n * 4, T, S, S, 3] (MEMBERS order) and whether each set's bodies were
    falling (moving along gravity) from the last seen frame to the first hidden one."""
    pictures = []
    render = F.R.Picture
    F.R.Picture = lambda *a, **k: pictures.append(render(*a, **k)) or pictures[-1]  # the members' centres
    try:
        rng, clips, falling = np.random.default_rng(seed), [], []
        switch = canvas.segment // 2
        for _ in range(n):
            pictures.clear()
            made = F.make_future(rng, canvas)
            u = P.GRAVITY_DIRECTIONS[made.labels["gravity"]]
            true = np.asarray(pictures[0].centres)  # [F, N, 2]: the first member drawn is the true one
            step = (true[switch] - true[switch - 1] + 0.5) % 1 - 0.5  # on the torus
            falling.append(float((step @ u).mean()) > 0)
            by_member = {s["member"]: made.frames[s["start"]:s["start"] + canvas.segment] for s in made.labels["segments"]}
            clips += [by_member[m] for m in MEMBERS]
    finally:
        F.R.Picture = render
    return torch.from_numpy(np.stack(clips)), np.array(falling)


def ranks(surprises: np.ndarray) -> np.ndarray:
    """[sets, members] rank of each member's surprise within its set, 0 = least surprising."""
    return surprises.reshape(-1, len(MEMBERS)).argsort(1).argsort(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("encoders", nargs="+")
    ap.add_argument("--sets", type=int, default=400)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    cfg = load_config(args.params)
    clips, falling = draw(args.sets, args.seed, canvas(cfg.ingest.synthetic, cfg.ingest.clip_frames))
    print(f"{args.sets} sets: {int(falling.sum())} falling, {int((~falling).sum())} rising; mean rank per member "
          f"({', '.join(MEMBERS)}), 0 = least surprising")
    held = False
    for path in args.encoders:
        part = predictive_part(load_objective(path)[0])
        if part is None:
            print(f"{path}: its objective has no predictor")
            continue
        readers = ([("last frame held (no learning)", held_frame_surprise(clips, part))] if not held else [])
        held = True
        for label, s in readers + [(path, surprise(part, clips, cfg.probe_eval.batch_size))]:
            r = ranks(s)
            for tag, m in (("falling", falling), ("rising", ~falling)):
                print(f"  {label} [{tag}]: " + "  ".join(f"{r[m, i].mean():.2f}" for i in range(len(MEMBERS))))


if __name__ == "__main__":
    main()

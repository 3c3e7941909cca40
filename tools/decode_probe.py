"""Decode videos with whichever `decord` this interpreter has, the way videossl's decoder calls it
(one thread, straight to a reduced size, every frame in chunks), and record the frames and times.

Run it under two interpreters (decord 0.6.0 and decord2), then `--compare` the two records: the
frames' agreement per file and size, and the decode speed side by side (docs/performance.md).

    python tools/decode_probe.py run OUT.npz [--sizes 0,32,224] [--repeats 3] VIDEO...
    python tools/decode_probe.py compare A.npz B.npz

Needs only numpy and decord, so it runs in a bare virtualenv beside the project's.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

CHUNK = 64  # frames per get_batch, as videossl.data.decode reads them
THREADS = 1  # videossl.data.decode.DECODE_THREADS


def decode(path: str, size: int) -> np.ndarray:
    import decord

    vr = (decord.VideoReader(path, num_threads=THREADS) if size == 0
          else decord.VideoReader(path, width=size, height=size, num_threads=THREADS))
    n = len(vr)
    return np.concatenate([vr.get_batch(list(range(i, min(i + CHUNK, n)))).asnumpy() for i in range(0, n, CHUNK)])


def run(out: str, videos: list[str], sizes: list[int], repeats: int) -> None:
    import decord

    arrays, times = {}, {}
    for v in videos:
        for s in sizes:
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                frames = decode(v, s)
                best = min(best, time.perf_counter() - t0)
            key = f"{v}|{s}"
            arrays[key], times[key] = frames, best
    np.savez_compressed(out, meta=json.dumps({"decord": decord.__version__, "times": times}),
                        **{f"a{i}": a for i, a in enumerate(arrays.values())}, keys=json.dumps(list(arrays)))


def compare(a_path: str, b_path: str) -> None:
    a, b = np.load(a_path), np.load(b_path)
    ka, kb = json.loads(str(a["keys"])), json.loads(str(b["keys"]))
    ma, mb = json.loads(str(a["meta"])), json.loads(str(b["meta"]))
    print(f"| video | size | frames | identical | max abs diff | mean abs diff | decord {ma['decord']} s | "
          f"decord {mb['decord']} s | speed ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for i, key in enumerate(ka):
        j = kb.index(key)
        x, y = a[f"a{i}"], b[f"a{j}"]
        video, size = key.rsplit("|", 1)
        ta, tb = ma["times"][key], mb["times"][key]
        if x.shape != y.shape:
            diff = f"shapes {x.shape} vs {y.shape}"
            print(f"| {video.rsplit('/', 1)[-1]} | {size or 'full'} | — | no | {diff} | — | {ta:.3f} | {tb:.3f} | "
                  f"{ta / tb:.2f}x |")
            continue
        d = np.abs(x.astype(np.int16) - y.astype(np.int16))
        print(f"| {video.rsplit('/', 1)[-1]} | {size or 'full'} | {len(x)} | {'yes' if not d.any() else 'no'} | "
              f"{int(d.max())} | {d.mean():.4f} | {ta:.3f} | {tb:.3f} | {ta / tb:.2f}x |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("out")
    r.add_argument("videos", nargs="+")
    r.add_argument("--sizes", default="0,32,224", help="square output sizes; 0 = the video's own")
    r.add_argument("--repeats", type=int, default=3, help="decodes per file and size; the fastest counts")
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    args = ap.parse_args()
    if args.cmd == "run":
        run(args.out, args.videos, [int(s) for s in args.sizes.split(",")], args.repeats)
    else:
        compare(args.a, args.b)


if __name__ == "__main__":
    main()

"""Trainer entry point for torchrun: `torchrun ... -m videossl.train.main --config C --data D --out O --variant V`.

This is what a cluster job runs in every pod; the pretrain step runs it through torchrun locally.
"""
from __future__ import annotations

import argparse
import json
import sys

from videossl.config import ConfigError, load_config
from videossl.train.loop import TrainingError, train


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="videossl.train.main", description=__doc__)
    ap.add_argument("--config", required=True, help="resolved params YAML")
    ap.add_argument("--data", required=True, help="ingested dataset directory")
    ap.add_argument("--out", required=True, help="checkpoint path (local or s3://)")
    ap.add_argument("--variant", choices=["video", "frames"], default="video")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
        result = train(cfg, args.data, args.out, args.variant)
    except (ConfigError, TrainingError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Trainer entry point for torchrun: `torchrun ... -m videossl.train.main --config C --data D --out DIR`.

This is what a cluster job runs in every pod; the pretrain step runs it through torchrun locally.
Both encoders (video, and the frame encoder of the bag-of-frames baseline) train in one launch, one
after the other, so the process group and the imports are paid for once.
"""
from __future__ import annotations

import argparse
import json
import sys

from videossl.config import ConfigError, load_config
from videossl.errors import StepError
from videossl.models.checkpoint import CHECKPOINTS
from videossl.train import distributed
from videossl.train.loop import train


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="videossl.train.main", description=__doc__)
    ap.add_argument("--config", required=True, help="resolved params YAML")
    ap.add_argument("--data", required=True, help="ingested dataset directory")
    ap.add_argument("--out", required=True, help="checkpoint directory (local or s3://)")
    ap.add_argument("--variants", nargs="+", choices=list(CHECKPOINTS), default=list(CHECKPOINTS))
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
        for variant in args.variants:
            result = train(cfg, args.data, f"{args.out.rstrip('/')}/{CHECKPOINTS[variant]}", variant)
            print(json.dumps(result), flush=True)
    except (ConfigError, StepError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        distributed.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

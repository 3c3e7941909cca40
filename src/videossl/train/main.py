"""Trainer entry point for torchrun: `torchrun ... -m videossl.train.main --config C --data D --out DIR`.

This is what a cluster job runs in every pod; the pretrain step runs it through torchrun locally.
Both encoders (video, and the frame encoder of the bag-of-frames baseline) train in one launch, one
after the other, so the process group and the imports are paid for once.
"""
from __future__ import annotations

import argparse
import json
import sys

from videossl import processes
from videossl.config import ConfigError, load_config
from videossl.errors import StepError
from videossl.models.checkpoint import CHECKPOINTS
from videossl.train import distributed
from videossl.train.checkpointing import checkpoint_dir_for
from videossl.train.loop import train


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="videossl.train.main", description=__doc__)
    ap.add_argument("--config", required=True, help="resolved params YAML")
    ap.add_argument("--data", required=True, help="ingested dataset directory")
    ap.add_argument("--out", required=True, help="checkpoint directory (local or s3://)")
    ap.add_argument("--variants", nargs="+", choices=list(CHECKPOINTS), default=list(CHECKPOINTS))
    ap.add_argument("--resume", action=argparse.BooleanOptionalAction, default=None,
                    help="override pretrain.resume: continue from the newest valid training checkpoint of the same "
                         "run in pretrain.checkpoint_dir (default: OUT/checkpoints), or start from step 0")
    args = ap.parse_args(argv)
    ok = False
    try:
        cfg = load_config(args.config)
        if args.resume is not None:
            cfg = cfg.model_copy(update={"pretrain": cfg.pretrain.model_copy(update={"resume": args.resume})})
        out = args.out.rstrip("/")
        checkpoint_dir = checkpoint_dir_for(cfg.pretrain.checkpoint_dir, out)
        for variant in args.variants:
            result = train(cfg, args.data, f"{out}/{CHECKPOINTS[variant]}", variant, checkpoint_dir)
            # one write per line: ranks share stdout, and print() writes the text and its newline apart
            sys.stdout.write(json.dumps(result) + "\n")
            sys.stdout.flush()
        ok = True
    except (ConfigError, StepError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        distributed.teardown(ok)
    return 0


if __name__ == "__main__":
    processes.die_with_parent()  # a worker process never outlives the torchrun that started it
    sys.exit(main())

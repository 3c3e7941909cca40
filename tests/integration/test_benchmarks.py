"""The benchmarks run (a step or two, tiny model): they print their tables. No timing is asserted."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.tiny import REPO, TINY_OVERRIDES

TINY_MODEL = [o for o in TINY_OVERRIDES if o.startswith(("model.", "ingest.size", "pretrain.batch_size"))]


def run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], capture_output=True,
                          text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_bench_train_step_runs(tmp_path):
    sets = [a for o in TINY_MODEL for a in ("-S", o)]
    out = run("bench_train_step.py", "--steps", "1", "--rounds", "1", "--warmup", "1", *sets,
              "--json", str(tmp_path / "step.json"))
    assert "videossl (ours)" in out and "clips/s (best)" in out
    try:
        import transformers  # noqa: F401  (the bench extra: the peer is measured when it is installed)
    except ImportError:
        assert "measuring ours alone" in out
    else:
        assert "HF VideoMAEForPreTraining" in out and "ours / theirs throughput" in out
    assert (tmp_path / "step.json").is_file()


def test_bench_loader_runs(tmp_path, tiny_data):
    sets = [a for o in TINY_MODEL + ["pretrain.metrics_port=null"]
            for a in ("-S", o)]
    out = run("bench_loader.py", "--data", str(tiny_data), "--steps", "2", "--train-steps", "1", "--run-steps", "2",
              *sets)
    assert "loader, 0 workers" in out and "loader / training" in out and "data-wait fraction" in out


def test_bench_ingest_runs(tmp_path):
    out = run("bench_ingest.py", "--videos", "6", "--size", "32", "--hd-videos", "1", "--hd-frames", "8",
              "--json", str(tmp_path / "i.json"))
    assert "partitions x decode processes" in out and "same dataset digest whatever the partitions: True" in out
    assert "source frames/s" in out and "| pods |" in out
    assert (tmp_path / "i.json").is_file()


def test_bench_stream_runs(tmp_path):
    sets = [a for o in TINY_MODEL for a in ("-S", o)]
    out = run("bench_stream.py", *sets, "--videos", "8", "--shard-frames", "128", "--steps", "2", "--train-steps", "1",
              "--formats", "h264", "--run-steps", "2", "--json", str(tmp_path / "s.json"))
    # compressed shards (npy ones take the same path, and train streamed in test_streaming.py)
    assert "first batch: copied s" in out and "cache MiB" in out
    assert "h264: streamed loader / training" in out and "h264: a real run on streamed shards, 2 steps" in out
    assert [r["format"] for r in json.loads((tmp_path / "s.json").read_text())["formats"]] == ["h264"]

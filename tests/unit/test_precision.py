"""Which autocast a CPU step runs under: bf16 only where the CPU multiplies it natively, and never when
torch's own ATEN_CPU_CAPABILITY caps its kernels below avx512 (how an AVX2-only CPU is stood in for)."""
from __future__ import annotations

import subprocess
import sys

import torch

from videossl.train import precision


def test_capped_kernels_mean_no_native_bf16(monkeypatch):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert not precision.cpu_has_native_bf16()
    assert precision.autocast_dtype("bf16", torch.device("cpu")) is None
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    native = precision.cpu_has_native_bf16()  # the hardware's answer
    assert precision.autocast_dtype("bf16", torch.device("cpu")) == (torch.bfloat16 if native else None)
    assert precision.autocast_dtype("fp32", torch.device("cpu")) is None


def test_torch_itself_runs_avx2_kernels_under_the_cap():
    # the same variable, read by torch at start-up: the stand-in runs an AVX2-only CPU's kernels
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    out = subprocess.run([sys.executable, "-c", code], env={"ATEN_CPU_CAPABILITY": "avx2", "PATH": ""},
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "AVX2"

"""Which autocast a training step runs under: `pretrain.precision` on this device.

GPU: bf16 or fp16 autocast (fp16 with a gradient scaler), or fp32.
CPU: bf16 autocast only where the CPU multiplies bf16 in hardware (AMX tiles or AVX512-BF16); elsewhere
bf16 is emulated and slower than fp32, so the step stays fp32 (and says so). fp16 on a CPU is fp32:
there are no fast fp16 CPU kernels to gain from. Measured speeds: docs/measurements.md.
torch's own `ATEN_CPU_CAPABILITY` (default, avx2, avx512...) caps the kernels it runs; capped below
avx512, bf16 is not native either, so `ATEN_CPU_CAPABILITY=avx2 make run` runs as an AVX2-only CPU would.
"""
from __future__ import annotations

import os
from contextlib import nullcontext

import torch

GPU_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


# ATEN_CPU_CAPABILITY values under which torch runs no kernel that multiplies bf16 in hardware
NO_BF16_CAPABILITIES = ("default", "avx2", "zvector", "vsx")


def cpu_has_native_bf16() -> bool:
    if os.environ.get("ATEN_CPU_CAPABILITY", "").lower() in NO_BF16_CAPABILITIES:
        return False
    cpu = torch.cpu  # private probes: absent from some builds, then assume no
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(cpu, name, lambda: False)() for name in probes)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `pretrain.precision` on `device`, or None for plain fp32."""
    if device.type == "cuda":
        return GPU_DTYPES[precision]
    return torch.bfloat16 if precision == "bf16" and cpu_has_native_bf16() else None


def autocast(dtype: torch.dtype | None, device: torch.device):
    return torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()


def describe(precision: str, dtype: torch.dtype | None, device: torch.device) -> str:
    got = {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[dtype]
    if got == precision:
        return f"{got} on {device.type}"
    return f"{got} on {device.type} (pretrain.precision={precision} has no fast kernels here)"

"""Mixed precision (TrainConfig.precision): what the record says about the CPU's bf16 support.

3.6-compatible, NumPy-free: every worker may import it.
"""

#: x86 flags for bfloat16 arithmetic in hardware: AVX512_BF16 (dot products, conversions) and AMX
#: (tile matrix multiply). Without them oneDNN / XLA emulate bf16 with float32 arithmetic, and
#: bf16 saves memory traffic only.
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "avx_vnni_bf16", "avxneconvert")


def cpu_bf16_flags(path="/proc/cpuinfo"):
    """The BF16_FLAGS this CPU has ([] where /proc/cpuinfo is absent or lists none)."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [f for f in BF16_FLAGS if f in have]
    except (IOError, OSError):
        pass
    return []


def precision_environment(precision):
    """environment() fields for a run: the precision, and for bf16 whether the CPU has native
    bf16 instructions."""
    info = {"precision": precision}
    if precision == "bf16":
        flags = cpu_bf16_flags()
        info["cpu_native_bf16"] = bool(flags)
        info["cpu_bf16_flags"] = flags
    return info

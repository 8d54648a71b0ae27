"""/proc/cpuinfo samples of real CPUs, for the CPU feature and policy tests."""

SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 avx512_fp16 amx_tile amx_int8
"""
ZEN4 = """processor\t: 0
model name\t: AMD EPYC 9654
flags\t\t: fpu sse2 avx2 fma avx512f avx512bw avx512_vnni avx512_bf16
"""
SKYLAKE = """processor\t: 0
model name\t: Intel(R) Xeon(R) Gold 6148
flags\t\t: fpu sse2 avx2 fma avx512f avx512bw
"""
ARM = """processor\t: 0
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32
"""

#!/usr/bin/env bash
# Run a command as on an x86-64 CPU with AVX2 but no AVX-512, VNNI or AMX, at this CPU's own speed:
#
#     scripts/as_avx2.sh make test
#     scripts/as_avx2.sh .venv/bin/python benchmarks/int8_cpu_speed.py ...
#
# CPU kinds change what onnxruntime and PyTorch compute (int8: VPMADDUBSW saturates without VNNI; bf16; oneDNN's
# kernels), and CI machines are of both kinds. This lets one machine of the AVX-512 kind test and time the other
# kind's code paths: scripts/cpuid_mask.c, preloaded, hides the AVX-512/VNNI/AMX feature bits from CPUID, so
# libraries that pick kernels by CPUID pick their AVX2 ones; everything else runs natively. It needs Linux's CPUID
# faulting (the cpuid_fault flag in /proc/cpuinfo; many VMs and recent Intel and AMD CPUs have it) and gcc.
# Exit status 3, with the reason, where it cannot run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
die() { echo "as_avx2: $*" >&2; exit 3; }
[ "$#" -gt 0 ] || { echo "usage: scripts/as_avx2.sh COMMAND [ARGS...]" >&2; exit 2; }
[ "$(uname -m)" = x86_64 ] || die "x86-64 only (this is $(uname -m))"
grep -qw cpuid_fault /proc/cpuinfo || die "no CPUID faulting here (/proc/cpuinfo lacks the cpuid_fault flag)"
command -v gcc >/dev/null || die "gcc not found (it builds scripts/cpuid_mask.c)"
src=$here/cpuid_mask.c
lib=${TMPDIR:-/tmp}/distill-cpuid-mask-$(id -u)-$(sha1sum "$src" | cut -c1-12).so
if [ ! -f "$lib" ]; then
  gcc -O2 -Wall -shared -fPIC -o "$lib.$$" "$src" -ldl || die "gcc could not build $src"
  mv "$lib.$$" "$lib"
fi
export LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}"
# /proc/cpuinfo still lists the hidden features: distill's records (cpu_info) drop these and name them hidden_flags
export DISTILL_HIDDEN_CPU_FLAGS="avx512f avx512dq avx512ifma avx512pf avx512er avx512cd avx512bw avx512vl avx512vbmi \
avx512_vbmi2 avx512_vnni avx512_bitalg avx512_vpopcntdq avx512_4vnniw avx512_4fmaps avx512_vp2intersect avx512_fp16 \
avx512_bf16 avx_vnni amx_bf16 amx_tile amx_int8"
exec "$@"

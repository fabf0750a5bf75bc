#!/usr/bin/env bash
# Run a command as on an AVX2-only CPU: AVX-512 hidden from `cpuid` for it and its children.
#
#   tools/avx2_only.sh python3 tools/onnx_bench.py bench-models/xception.cxrm --rounds 11
#
# onnxruntime picks its kernels from `cpuid` and cannot be told to stay off AVX-512, so on an
# AVX-512 machine this is the only way to time its AVX2 kernels against cxrm's. The shim
# (tools/hide_avx512.c, built here into target/tools/) needs CPUID faulting: Linux on a CPU
# that lists `cpuid_fault` in /proc/cpuinfo (recent Intel and AMD Zen 4, and KVM guests).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
src="$root/tools/hide_avx512.c"
lib="$root/target/tools/hide_avx512.so"
if [ $# -eq 0 ]; then
  echo "usage: tools/avx2_only.sh COMMAND [ARGS...]" >&2
  exit 2
fi
if ! grep -qw cpuid_fault /proc/cpuinfo; then
  echo "avx2_only.sh: this machine has no CPUID faulting (cpuid_fault), so AVX-512 cannot be hidden" >&2
  exit 2
fi
if [ ! -f "$lib" ] || [ "$src" -nt "$lib" ]; then
  mkdir -p "$(dirname "$lib")"
  ${CC:-cc} -O2 -Wall -Wextra -shared -fPIC -o "$lib.tmp" "$src"
  mv "$lib.tmp" "$lib"
fi
LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}" exec "$@"

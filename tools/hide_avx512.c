/* An LD_PRELOAD shim that hides AVX-512 from the `cpuid` instruction, so that one process runs
 * as on an AVX2-only CPU (a Zen 3, say) while the machine has AVX-512.
 *
 * Why: onnxruntime chooses its kernels (MLAS) from `cpuid` when it loads and has no setting to
 * keep it off AVX-512, so on an AVX-512 machine it cannot be compared with cxrm's AVX2 kernels
 * (`CXRM_MAX_ISA=avx2`). With this shim both runtimes, and everything else in the process (the
 * `gemm` crate, `multiversion` copies, numpy), see the same AVX2 CPU.
 *
 * How: Linux's CPUID faulting (`arch_prctl(ARCH_SET_CPUID, 0)`, where /proc/cpuinfo lists
 * `cpuid_fault`) turns every `cpuid` into a SIGSEGV. The handler runs the real instruction with
 * faulting briefly off, clears the AVX-512 bits of leaf 7, and steps over the instruction.
 * The setting is per thread, inherited by new threads and child processes, and reset by
 * execve; the constructor below runs again in each program that the preload reaches.
 * `xgetbv` still reports the ZMM state enabled, which is harmless: every caller we know of
 * requires the `cpuid` bit as well.
 *
 * Limits: a program that installs its own SIGSEGV handler later takes the signal from us, and
 * its next `cpuid` then crashes it. Python's faulthandler does this when enabled (-X
 * faulthandler); onnxruntime, numpy and cxrm do not.
 *
 * Build and use (tools/avx2_only.sh does both):
 *   cc -O2 -shared -fPIC -o hide_avx512.so tools/hide_avx512.c
 *   LD_PRELOAD=$PWD/hide_avx512.so python3 tools/onnx_bench.py ...
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

/* Leaf 7, subleaf 0. EBX: F 16, DQ 17, IFMA 21, PF 26, ER 27, CD 28, BW 30, VL 31. */
#define LEAF7_EBX_AVX512 ((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | \
                          (1u << 28) | (1u << 30) | (1u << 31))
/* ECX: VBMI 1, VBMI2 6, VNNI 11, BITALG 12, VPOPCNTDQ 14. */
#define LEAF7_ECX_AVX512 ((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14))
/* EDX: 4VNNIW 2, 4FMAPS 3, VP2INTERSECT 8, FP16 23. */
#define LEAF7_EDX_AVX512 ((1u << 2) | (1u << 3) | (1u << 8) | (1u << 23))
/* Leaf 7, subleaf 1, EAX: BF16 5. */
#define LEAF7_1_EAX_AVX512 (1u << 5)

static int set_cpuid_enabled(int enabled) {
    return (int)syscall(SYS_arch_prctl, ARCH_SET_CPUID, enabled);
}

static void emulate_cpuid(int sig, siginfo_t *info, void *context) {
    (void)info;
    ucontext_t *uc = context;
    greg_t *regs = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)regs[REG_RIP];
    if (ip[0] != 0x0f || ip[1] != 0xa2) {
        /* A real fault: let it happen again with the default action (a core dump). */
        signal(sig, SIG_DFL);
        return;
    }
    unsigned leaf = (unsigned)regs[REG_RAX], subleaf = (unsigned)regs[REG_RCX];
    unsigned a, b, c, d;
    set_cpuid_enabled(1);
    __cpuid_count(leaf, subleaf, a, b, c, d);
    set_cpuid_enabled(0);
    if (leaf == 7 && subleaf == 0) {
        b &= ~LEAF7_EBX_AVX512;
        c &= ~LEAF7_ECX_AVX512;
        d &= ~LEAF7_EDX_AVX512;
    } else if (leaf == 7 && subleaf == 1) {
        a &= ~LEAF7_1_EAX_AVX512;
    }
    /* cpuid writes the low 32 bits and zeroes the high ones. */
    regs[REG_RAX] = a;
    regs[REG_RBX] = b;
    regs[REG_RCX] = c;
    regs[REG_RDX] = d;
    regs[REG_RIP] += 2;
}

__attribute__((constructor)) static void hide_avx512(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = emulate_cpuid;
    action.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGSEGV, &action, NULL) != 0 || set_cpuid_enabled(0) != 0) {
        /* Without CPUID faulting the process would silently keep AVX-512: refuse instead. */
        fprintf(stderr, "hide_avx512: this CPU or kernel has no CPUID faulting (cpuid_fault); "
                        "AVX-512 cannot be hidden\n");
        _exit(2);
    }
}

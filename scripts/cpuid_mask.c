/* Run a program as on an x86-64 CPU without AVX-512 and without VNNI (AVX2 only), at native speed.
 *
 *     scripts/as_avx2.sh COMMAND ...       (builds this file with gcc, sets LD_PRELOAD, runs COMMAND)
 *
 * Linux's CPUID faulting (arch_prctl ARCH_SET_CPUID; /proc/cpuinfo flag cpuid_fault) makes every CPUID instruction of
 * this process raise SIGSEGV. The handler runs the real CPUID and clears the feature bits of AVX-512, VNNI (AVX-512
 * and AVX-VNNI) and AMX before handing the registers back, so libraries that choose their kernels by CPUID
 * (onnxruntime's MLAS, PyTorch, oneDNN) choose those of an AVX2 CPU. Every other instruction runs natively, so timings
 * are this core's timings of the AVX2 code. The setting is inherited by threads and fork()ed children; exec() clears
 * it and LD_PRELOAD, passed on in the environment, sets it again.
 *
 * Programs install SIGSEGV handlers of their own (Python's faulthandler, PyTorch's DataLoader workers). sigaction()
 * and signal() for SIGSEGV are therefore intercepted: the program's handler is recorded, not installed, and gets
 * every SIGSEGV that is not a CPUID fault. */
#define _GNU_SOURCE
#include <cpuid.h>
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define ARCH_SET_CPUID 0x1012

typedef int (*sigaction_fn)(int, const struct sigaction *, struct sigaction *);
static sigaction_fn real_sigaction;
static struct sigaction program_handler; /* what the program asked for (SIG_DFL until it asks) */

static void mask(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    if (leaf == 7 && sub == 0) {
        /* EBX: AVX512 F 16, DQ 17, IFMA 21, PF 26, ER 27, CD 28, BW 30, VL 31 */
        r[1] &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) | (1u << 30) | (1u << 31));
        /* ECX: AVX512 VBMI 1, VBMI2 6, VNNI 11, BITALG 12, VPOPCNTDQ 14 */
        r[2] &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14));
        /* EDX: AVX512 4VNNIW 2, 4FMAPS 3, VP2INTERSECT 8, AMX-BF16 22, AVX512_FP16 23, AMX-TILE 24, AMX-INT8 25 */
        r[3] &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) | (1u << 25));
    } else if (leaf == 7 && sub == 1) {
        r[0] &= ~((1u << 4) | (1u << 5)); /* AVX-VNNI, AVX512_BF16 */
    } else if (leaf == 0xd && sub == 0) {
        r[0] &= ~(0xe0u | (3u << 17)); /* XSAVE state components: opmask and ZMM (5-7), AMX tiles (17-18) */
    }
}

static void on_segv(int sig, siginfo_t *info, void *ctx) {
    greg_t *g = ((ucontext_t *)ctx)->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)g[REG_RIP];
    if (info->si_code == SI_KERNEL && ip[0] == 0x0f && ip[1] == 0xa2) { /* CPUID */
        uint32_t leaf = (uint32_t)g[REG_RAX], sub = (uint32_t)g[REG_RCX], r[4];
        syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
        __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
        syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
        mask(leaf, sub, r);
        g[REG_RAX] = r[0]; g[REG_RBX] = r[1]; g[REG_RCX] = r[2]; g[REG_RDX] = r[3];
        g[REG_RIP] += 2;
        return;
    }
    struct sigaction h = program_handler;
    if (h.sa_handler == SIG_DFL || h.sa_handler == SIG_IGN) { /* die as the program would have */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        real_sigaction(sig, &dfl, NULL);
        if (info->si_code <= 0) raise(sig); /* sent, not a fault: returning would not repeat it */
        return;
    }
    if (h.sa_flags & SA_SIGINFO) h.sa_sigaction(sig, info, ctx);
    else h.sa_handler(sig);
}

int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    if (!real_sigaction) real_sigaction = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    if (sig != SIGSEGV) return real_sigaction(sig, act, old);
    if (old) *old = program_handler;
    if (act) program_handler = *act;
    return 0;
}

sighandler_t signal(int sig, sighandler_t handler) {
    if (sig != SIGSEGV) {
        struct sigaction act, old;
        memset(&act, 0, sizeof act);
        act.sa_handler = handler;
        act.sa_flags = SA_RESTART;
        return sigaction(sig, &act, &old) == 0 ? old.sa_handler : SIG_ERR;
    }
    sighandler_t before = program_handler.sa_handler;
    memset(&program_handler, 0, sizeof program_handler);
    program_handler.sa_handler = handler;
    return before;
}

__attribute__((constructor)) static void start(void) {
    real_sigaction = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    program_handler.sa_handler = SIG_DFL;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    real_sigaction(SIGSEGV, &sa, NULL);
    if (syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
        fprintf(stderr, "cpuid_mask: no CPUID faulting on this CPU or kernel (/proc/cpuinfo flag cpuid_fault)\n");
        _exit(3);
    }
}

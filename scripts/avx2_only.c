/* Makes this process see an AVX2 CPU without AVX-512 and without VNNI (benchmarks only: scripts/bench_ingest.py
 * --cpu avx2). Loaded with LD_PRELOAD, it turns on CPUID faulting (Linux arch_prctl ARCH_SET_CPUID, on CPUs whose
 * flags list cpuid_fault), so every CPUID instruction traps; the handler runs the real CPUID and clears the
 * AVX-512, VNNI and AMX bits of leaf 7 before returning. onnxruntime, torch and numpy pick their kernels from
 * CPUID when they load, so they run the same code paths as on an AVX2-only CPU (the int8 products saturate the
 * way they do there). The clock speed and caches stay this machine's.
 *
 *   cc -O2 -shared -fPIC -o avx2_only.so scripts/avx2_only.c
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static long cpuid_faulting(int enabled) { return syscall(SYS_arch_prctl, ARCH_SET_CPUID, enabled ? 0 : 1); }

static void on_fault(int sig, siginfo_t *info, void *context) {
    ucontext_t *uc = context;
    greg_t *r = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)r[REG_RIP];
    if (ip[0] != 0x0f || ip[1] != 0xa2) { signal(SIGSEGV, SIG_DFL); return; }
    unsigned leaf = (unsigned)r[REG_RAX], sub = (unsigned)r[REG_RCX], a, b, c, d;
    cpuid_faulting(0);
    __cpuid_count(leaf, sub, a, b, c, d);
    cpuid_faulting(1);
    if (leaf == 7 && sub == 0) {
        b &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) | (1u << 30) | (1u << 31));
        c &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14));
        d &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) | (1u << 25));
    } else if (leaf == 7 && sub == 1) {
        a &= ~((1u << 4) | (1u << 5) | (1u << 23));
        d &= ~((1u << 4) | (1u << 5));
    }
    r[REG_RAX] = a; r[REG_RBX] = b; r[REG_RCX] = c; r[REG_RDX] = d;
    r[REG_RIP] += 2;
}

__attribute__((constructor)) static void hide_avx512_and_vnni(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_fault;
    action.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &action, 0);
    cpuid_faulting(1);
}

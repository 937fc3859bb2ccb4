/* cpumask.so: run a program as if the CPU had no AVX-512 (and no AVX-VNNI), to measure
 * the code an AVX2-only machine (Zen 2/3 class) gets, ONNX Runtime's included, on a
 * machine that has AVX-512.
 *
 *   gcc -O2 -shared -fPIC bench/cpumask.c -o bench/out/cpumask.so
 *   LD_PRELOAD=$PWD/bench/out/cpumask.so python3 bench/run.py ...
 *
 * Linux only, and only on CPUs with CPUID faulting (`cpuid_fault` in /proc/cpuinfo):
 * the constructor makes every later CPUID instruction of the process (and of the
 * threads and children it creates, until exec) trap; the SIGSEGV handler executes the
 * real CPUID with faulting briefly off, clears the AVX-512, AVX-VNNI and AMX feature
 * bits of leaf 7 and returns to the instruction after it. Code that ran before the
 * constructor (the dynamic loader's and libc's own feature detection) keeps what it
 * saw, so libc's string functions may still use AVX-512; compiled kernels and ONNX
 * Runtime's MLAS, which detect at load time or later, see an AVX2 machine.
 *
 * CPUMASK=avx2 (default) keeps AVX2/FMA; CPUMASK=verbose also prints each masked leaf.
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static int verbose;

/* The program's own SIGSEGV disposition (Rust's std installs a stack-overflow handler
 * at start-up): `sigaction` below keeps ours installed and records theirs here, and
 * faults that are not CPUID go to it. */
static struct sigaction chained;
static int (*real_sigaction)(int, const struct sigaction *, struct sigaction *);

static int call_real_sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
  if (!real_sigaction) {
    real_sigaction = (int (*)(int, const struct sigaction *, struct sigaction *))dlsym(
        RTLD_NEXT, "sigaction");
  }
  return real_sigaction(sig, act, old);
}

int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
  if (sig != SIGSEGV) return call_real_sigaction(sig, act, old);
  if (old) *old = chained;
  if (act) chained = *act;
  return 0;
}

sighandler_t signal(int sig, sighandler_t handler) {
  if (sig != SIGSEGV) {
    struct sigaction act, old;
    memset(&act, 0, sizeof act);
    act.sa_handler = handler;
    act.sa_flags = SA_RESTART;
    if (call_real_sigaction(sig, &act, &old) != 0) return SIG_ERR;
    return old.sa_handler;
  }
  sighandler_t old = (chained.sa_flags & SA_SIGINFO) ? SIG_DFL : chained.sa_handler;
  memset(&chained, 0, sizeof chained);
  chained.sa_handler = handler;
  return old;
}

static long set_cpuid(int on) { return syscall(SYS_arch_prctl, ARCH_SET_CPUID, on); }

static void real_cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
  __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

static void mask(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
  if (leaf == 7 && sub == 0) {
    /* EBX: AVX512F 16, DQ 17, IFMA 21, PF 26, ER 27, CD 28, BW 30, VL 31 */
    r[1] &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) |
              (1u << 30) | (1u << 31));
    /* ECX: VBMI 1, VBMI2 6, GFNI-independent; VNNI 11, BITALG 12, VPOPCNTDQ 14 */
    r[2] &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14));
    /* EDX: 4VNNIW 2, 4FMAPS 3, VP2INTERSECT 8, AMX-BF16 22, FP16 23, AMX-TILE 24, AMX-INT8 25 */
    r[3] &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) |
              (1u << 25));
  } else if (leaf == 7 && sub == 1) {
    /* EAX: AVX-VNNI 4, AVX512_BF16 5, AVX-IFMA 23; EDX: AVX-VNNI-INT8 4, AVX10 19 */
    r[0] &= ~((1u << 4) | (1u << 5) | (1u << 23));
    r[3] &= ~((1u << 4) | (1u << 19));
  } else if (leaf == 0x24) {
    r[0] = r[1] = r[2] = r[3] = 0; /* AVX10 */
  }
}

static void on_segv(int sig, siginfo_t *si, void *ctx_) {
  ucontext_t *ctx = ctx_;
  greg_t *g = ctx->uc_mcontext.gregs;
  const uint8_t *ip = (const uint8_t *)g[REG_RIP];
  if (ip[0] != 0x0f || ip[1] != 0xa2) {
    /* a real fault: the program's handler, or the default action (the instruction
     * faults again on return) */
    if ((chained.sa_flags & SA_SIGINFO) && chained.sa_sigaction) {
      chained.sa_sigaction(sig, si, ctx_);
    } else if (chained.sa_handler != SIG_DFL && chained.sa_handler != SIG_IGN) {
      chained.sa_handler(sig);
    } else {
      struct sigaction dfl;
      memset(&dfl, 0, sizeof dfl);
      dfl.sa_handler = SIG_DFL;
      call_real_sigaction(sig, &dfl, NULL);
    }
    return;
  }
  uint32_t leaf = (uint32_t)g[REG_RAX], sub = (uint32_t)g[REG_RCX], r[4];
  set_cpuid(1);
  real_cpuid(leaf, sub, r);
  set_cpuid(0);
  uint32_t before[4];
  memcpy(before, r, sizeof r);
  mask(leaf, sub, r);
  if (verbose && memcmp(before, r, sizeof r) != 0) {
    char msg[128];
    int n = snprintf(msg, sizeof msg, "cpumask: leaf %#x.%u masked\n", leaf, sub);
    if (write(2, msg, (size_t)n) < 0) {
    }
  }
  g[REG_RAX] = r[0];
  g[REG_RBX] = r[1];
  g[REG_RCX] = r[2];
  g[REG_RDX] = r[3];
  g[REG_RIP] += 2;
}

__attribute__((constructor)) static void cpumask_init(void) {
  const char *mode = getenv("CPUMASK");
  verbose = mode && strstr(mode, "verbose");
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_segv;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  chained.sa_handler = SIG_DFL;
  call_real_sigaction(SIGSEGV, &sa, NULL);
  if (set_cpuid(0) != 0) {
    fprintf(stderr, "cpumask: CPUID faulting is not available here (no cpuid_fault); "
                    "the program runs unmasked\n");
  }
}

"""A plan's heavy steps on more than one CPU: a team of worker threads inside the generated
object, started once when the plan is bound (pinned to the CPUs the board gives the model
beside the loop's own), woken once per run, never allocating while it runs.

Every thread runs the same plan function, ``nnos_body(…, tid, nt, team)``: a step that splits
(a large convolution, matrix product, Softmax or LayerNorm: ``Program.share``) gives each thread
its own range of output channels or rows — the same arithmetic in the same order as on one
thread, so the outputs are bitwise the ones one thread computes; every other step runs on
thread 0 alone. A barrier separates steps where the threads change hands (``NNOS_SYNC``).
Waiting spins for up to a millisecond, then sleeps on a futex: between a loop's ticks the
workers sleep. A plan with no step worth splitting carries none of this (codegen.serial).
"""
from __future__ import annotations

SPLIT_WORK = 32_768      # multiply-adds: a step below this is not split (a wake and a barrier cost ~1 µs)
MAX_THREADS = 16
SPIN_NS = 1_000_000      # a waiting thread spins this long, then sleeps: the steps between barriers are
                         # shorter; a run's workers sleep between ticks after it

RUNTIME = r"""
#include <pthread.h>
#include <sched.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define NNOS_MAX_THREADS %(max)d
#define NNOS_SPIN_NS %(spin_ns)d
#if defined(__x86_64__) || defined(__i386__)
#define NNOS_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define NNOS_RELAX() __asm__ __volatile__("yield")
#else
#define NNOS_RELAX() do {} while (0)
#endif

typedef struct nnos_team nnos_team;
typedef struct { nnos_team *team; int tid; int cpu; } nnos_member;
struct nnos_team {
    int gen;                 /* bumped once per run: the workers start */
    int phase;               /* bumped when the last thread reaches a barrier */
    int arrived;             /* threads at the current barrier */
    int sleepers;            /* threads asleep on gen or phase */
    int stop;
    int nt, started;
    char *arena; void *const *w; char *ws;
    pthread_t th[NNOS_MAX_THREADS];
    nnos_member member[NNOS_MAX_THREADS];
};

static void nnos_futex_wake(int *word) { syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0); }

static long nnos_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

/* until *word is no longer old: spin for up to NNOS_SPIN_NS, then sleep (a waker that bumps
   the word wakes the sleepers it sees; both sides use sequentially consistent operations, so
   one of them sees the other). A sleeping CPU takes tens of µs to wake, under a hypervisor
   more: within a run the threads only spin. */
static void nnos_wait(nnos_team *t, int *word, int old) {
    long until = 0;
    for (unsigned i = 1;; i++) {
        if (__atomic_load_n(word, __ATOMIC_ACQUIRE) != old) return;
        NNOS_RELAX();
        if ((i & 255) == 0) {
            long now = nnos_now_ns();
            if (!until) until = now + NNOS_SPIN_NS;
            else if (now > until) break;
        }
    }
    __atomic_add_fetch(&t->sleepers, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(word, __ATOMIC_SEQ_CST) == old)
        syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, old, NULL, NULL, 0);
    __atomic_sub_fetch(&t->sleepers, 1, __ATOMIC_SEQ_CST);
}

static void nnos_bump(nnos_team *t, int *word) {
    __atomic_add_fetch(word, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&t->sleepers, __ATOMIC_SEQ_CST)) nnos_futex_wake(word);
}

static void nnos_sync(nnos_team *t) {
    int phase = __atomic_load_n(&t->phase, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&t->arrived, 1, __ATOMIC_ACQ_REL) == t->nt) {
        __atomic_store_n(&t->arrived, 0, __ATOMIC_RELAXED);
        nnos_bump(t, &t->phase);
    } else {
        nnos_wait(t, &t->phase, phase);
    }
}
#define NNOS_SYNC() do { if (nt > 1) nnos_sync(team); } while (0)
#define NNOS_SHARE(lo, hi, total) const int lo = (int)((long)(total) * tid / nt), hi = (int)((long)(total) * (tid + 1) / nt)
%(owner)s
static __attribute__((noipa)) void nnos_body(char *restrict arena, void *const *restrict w, char *restrict ws,
                                             int tid, int nt, nnos_team *team);

static void *nnos_worker(void *arg) {
    nnos_member *m = arg;
    nnos_team *t = m->team;
    int seen = 0;
    for (;;) {
        nnos_wait(t, &t->gen, seen);
        seen = __atomic_load_n(&t->gen, __ATOMIC_ACQUIRE);
        if (__atomic_load_n(&t->stop, __ATOMIC_ACQUIRE)) return NULL;
        nnos_body(t->arena, t->w, t->ws, m->tid, t->nt, t);
    }
}

int nnos_team_bytes(void) { return (int)sizeof(nnos_team); }

/* nt threads in all: the caller's and nt - 1 workers, worker i pinned to cpus[i - 1] (-1: not
   pinned). 0, or the error pthread gave (the workers started so far are stopped). */
void nnos_team_stop(nnos_team *t);
int nnos_team_start(nnos_team *t, int nt, const int *cpus) {
    memset(t, 0, sizeof *t);
    t->nt = nt < 1 ? 1 : (nt > NNOS_MAX_THREADS ? NNOS_MAX_THREADS : nt);
    for (int i = 1; i < t->nt; i++) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 1 << 20);     /* the kernels keep small tiles on the stack */
        t->member[i] = (nnos_member){t, i, cpus[i - 1]};
        if (cpus[i - 1] >= 0) {
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET(cpus[i - 1], &set);
            pthread_attr_setaffinity_np(&attr, sizeof set, &set);
        }
        int rc = pthread_create(&t->th[i], &attr, nnos_worker, &t->member[i]);
        pthread_attr_destroy(&attr);
        if (rc) { nnos_team_stop(t); return rc; }
        t->started = i;
    }
    return 0;
}

void nnos_team_stop(nnos_team *t) {
    __atomic_store_n(&t->stop, 1, __ATOMIC_RELEASE);
    nnos_bump(t, &t->gen);
    for (int i = 1; i <= t->started; i++) pthread_join(t->th[i], NULL);
    t->started = 0;
}

void nnos_run_team(nnos_team *t, char *arena, void *const *w, char *ws) {
    t->arena = arena; t->w = w; t->ws = ws;
    if (t->nt > 1) nnos_bump(t, &t->gen);
    nnos_body(arena, w, ws, 0, t->nt, t);
}
%(end)s
""" % {"max": MAX_THREADS, "spin_ns": SPIN_NS, "owner": "/* nnos:owner { */", "end": "/* } nnos:owner */"}
# (cpu/units.py: a unit of steps alone leaves out what is between the owner marks: the
# workers and the exported entry points, which the unit with nnos_run defines)


# every step a function gcc neither inlines nor analyses across calls: gcc 12.2 at -O1/-O2 dropped
# the call to a transpose's step function (act_s.dynamo's step 33) as if it did nothing (its IPA
# summaries, ipa-modref with ipa-pure-const: both off, or noipa, keep it) — see test_cpu_team.py
OPAQUE = "__attribute__((noipa))"
ARGS = "char *restrict arena, void *const *restrict w, char *restrict ws, int tid, int nt, nnos_team *team"


def wrap(blocks: list[tuple]) -> str:
    """The plan's steps, each its own function (as codegen.serial), and ``nnos_body`` calling
    them: a split step on every thread, any other step on thread 0; a barrier wherever the
    threads change hands, and one at the end (a run returns when every thread is done)."""
    steps, calls, last_split = [], [], None
    for s, note, code, split in blocks:
        steps.append(f"{note}\nstatic {OPAQUE} void nnos_step_{s}({ARGS}) {{\n"
                     f"    (void)arena; (void)w; (void)ws; (void)tid; (void)nt; (void)team;\n{code}\n}}\n")
        if last_split is not None and (split or last_split):
            calls.append("    NNOS_SYNC();")
        call = f"nnos_step_{s}(arena, w, ws, tid, nt, team);"
        calls.append(f"    {call}" if split else f"    if (tid == 0) {call}")
        last_split = split
    calls.append("    NNOS_SYNC();")
    return ("".join(steps) + f"static {OPAQUE} void nnos_body({ARGS}) {{\n" + "\n".join(calls) + "\n}\n"
            "void nnos_run(char *restrict arena, void *const *restrict w, char *restrict ws) {\n"
            "    nnos_body(arena, w, ws, 0, 1, 0);\n}\n")

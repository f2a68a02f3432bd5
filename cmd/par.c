/* par.c - the tools' data-parallel layer over MPI (par.h).
 *
 * The sums are deterministic by construction rather than by trusting an
 * MPI_Allreduce algorithm (whose association order depends on the
 * implementation, the message size and the process count, and may differ
 * between ranks): a buffer is cut into one chunk per rank; an all-to-all
 * gives rank j every rank's copy of chunk j; rank j adds them in rank order
 * 0..N-1, in double, and rounds once; an all-gather hands the summed chunks
 * to everyone. That is a reduce-scatter plus an all-gather, the two halves
 * of a ring all-reduce, so each rank sends 2 (N-1)/N of the buffer, as a
 * bandwidth-optimal all-reduce does, and every rank ends with the same
 * bytes, the same ones for the same N on every run. */
#include "par.h"

#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#ifdef MOR_HAVE_MPI
#include <mpi.h>
#endif

static int world_rank, world_size = 1, mpi_on;
static par_stats stats;
static mor_train_comm train_comm;

/* Elements per exchange: the staging buffer holds one rank's view of a
 * bucket (its size in elements, about), and MPI's int counts stay far
 * from overflow. */
#define PAR_BUCKET ((size_t)1 << 20)

int par_rank(void) { return world_rank; }
int par_size(void) { return world_size; }
par_stats par_get_stats(void) { return stats; }

int par_default_threads(void) {
    if (world_size < 2) return 0;
    cpu_set_t set;
    long online = sysconf(_SC_NPROCESSORS_ONLN), cpus = online;
    if (!sched_getaffinity(0, sizeof set, &set)) cpus = CPU_COUNT(&set);
    const char *v = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    long local = v ? strtol(v, NULL, 10) : 1;
    if (cpus >= online && local > 1) cpus /= local; /* not bound: share the machine */
    return cpus > 0 ? (int)cpus : 1;
}

#ifdef MOR_HAVE_MPI

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *stage;      /* staging buffer of the sums */
static size_t stage_cap; /* its bytes */

/* One bucket: buf (n elements of es bytes, 4 = float or 8 = double). */
static void sum_bucket(void *buf, size_t n, size_t es) {
    const int N = world_size, me = world_rank;
    int scount[N], sdispl[N], rcount[N], rdispl[N];
    size_t lo_me = n * (size_t)me / (size_t)N, k = n * (size_t)(me + 1) / (size_t)N - lo_me;
    for (int j = 0; j < N; j++) {
        size_t lo = n * (size_t)j / (size_t)N, hi = n * (size_t)(j + 1) / (size_t)N;
        scount[j] = (int)((hi - lo) * es);
        sdispl[j] = (int)(lo * es);
        rcount[j] = (int)(k * es);
        rdispl[j] = (int)((size_t)j * k * es);
    }
    size_t need = (size_t)N * k * es;
    if (need > stage_cap) {
        free(stage);
        stage = malloc(need);
        stage_cap = stage ? need : 0;
        if (!stage) {
            fprintf(stderr, "mor: error: rank %d: out of memory for %zu bytes of all-reduce buffer\n", me,
                    need);
            MPI_Abort(MPI_COMM_WORLD, EXIT_INPUT);
        }
    }
    double t0 = now_s();
    MPI_Alltoallv(buf, scount, sdispl, MPI_BYTE, stage, rcount, rdispl, MPI_BYTE, MPI_COMM_WORLD);
    stats.wait_s += now_s() - t0;
    /* chunk me: every rank's copy, added in rank order */
    if (es == sizeof(float)) {
        const float *in = stage;
        float *out = (float *)buf + lo_me;
        for (size_t x = 0; x < k; x++) {
            double acc = in[x];
            for (int i = 1; i < N; i++) acc += in[(size_t)i * k + x];
            out[x] = (float)acc;
        }
    } else {
        const double *in = stage;
        double *out = (double *)buf + lo_me;
        for (size_t x = 0; x < k; x++) {
            double acc = in[x];
            for (int i = 1; i < N; i++) acc += in[(size_t)i * k + x];
            out[x] = acc;
        }
    }
    t0 = now_s();
    MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, scount, sdispl, MPI_BYTE, MPI_COMM_WORLD);
    stats.wait_s += now_s() - t0;
    stats.reduced_bytes += (double)(n * es);
    stats.sent_bytes += 2.0 * (double)((n - k) * es);
    stats.calls++;
}

static void sum_any(void *buf, size_t n, size_t es) {
    if (world_size < 2) return;
    for (size_t off = 0; off < n; off += PAR_BUCKET)
        sum_bucket((char *)buf + off * es, n - off < PAR_BUCKET ? n - off : PAR_BUCKET, es);
}

void par_bcast(void *buf, size_t bytes) {
    if (world_size < 2) return;
    double t0 = now_s();
    for (size_t off = 0; off < bytes; off += (size_t)1 << 30) {
        size_t k = bytes - off < ((size_t)1 << 30) ? bytes - off : (size_t)1 << 30;
        MPI_Bcast((char *)buf + off, (int)k, MPI_BYTE, 0, MPI_COMM_WORLD);
    }
    stats.wait_s += now_s() - t0;
}

static int gather_alone(const double *mine, size_t n, double **all, size_t *counts);

int par_gather(const double *mine, size_t n, double **all, size_t *counts) {
    if (world_size < 2) return gather_alone(mine, n, all, counts);
    *all = NULL;
    const int N = world_size;
    long long cnt = (long long)n, got[N];
    double t0 = now_s();
    MPI_Gather(&cnt, 1, MPI_LONG_LONG, got, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD);
    int rc[N], rd[N], fail = 0;
    size_t total = 0;
    if (world_rank == 0) {
        for (int i = 0; i < N; i++) {
            counts[i] = (size_t)got[i];
            fail |= got[i] > INT_MAX || total + (size_t)got[i] > INT_MAX;
            rd[i] = (int)total;
            rc[i] = (int)got[i];
            total += (size_t)got[i];
        }
        *all = fail ? NULL : malloc(sizeof **all * (total ? total : 1));
        if (fail || !*all) {
            fprintf(stderr, "mor: error: rank 0: cannot gather %zu results\n", total);
            MPI_Abort(MPI_COMM_WORLD, EXIT_INPUT);
        }
    }
    MPI_Gatherv(mine, (int)n, MPI_DOUBLE, *all, rc, rd, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    stats.wait_s += now_s() - t0;
    return 0;
}

#else /* one process: every collective is the identity */

static void sum_any(void *buf, size_t n, size_t es) { (void)buf, (void)n, (void)es; }
void par_bcast(void *buf, size_t bytes) { (void)buf, (void)bytes; }

#endif

/* One process: rank 0 gathers its own numbers. */
static int gather_alone(const double *mine, size_t n, double **all, size_t *counts) {
    *all = malloc(sizeof **all * (n ? n : 1));
    if (!*all) return -1;
    if (n) memcpy(*all, mine, sizeof **all * n);
    counts[0] = n;
    return 0;
}

#ifndef MOR_HAVE_MPI
int par_gather(const double *mine, size_t n, double **all, size_t *counts) {
    return gather_alone(mine, n, all, counts);
}
#endif

void par_sum_f64(double *buf, size_t n) { sum_any(buf, n, sizeof(double)); }

static void comm_sum_f32(void *user, float *buf, size_t n) { (void)user, sum_any(buf, n, sizeof(float)); }
static void comm_sum_f64(void *user, double *buf, size_t n) { (void)user, sum_any(buf, n, sizeof(double)); }
static void comm_bcast(void *user, void *buf, size_t bytes) { (void)user, par_bcast(buf, bytes); }

const mor_train_comm *par_train_comm(void) {
    if (world_size < 2) return NULL;
    train_comm = (mor_train_comm){.rank = world_rank, .size = world_size, .sum_f32 = comm_sum_f32,
                                  .sum_f64 = comm_sum_f64, .bcast = comm_bcast};
    return &train_comm;
}

int par_bcast_str(char **s) {
    int64_t len = world_rank == 0 ? (*s ? (int64_t)strlen(*s) : -1) : 0;
    if (world_size < 2) return 0;
    par_bcast(&len, sizeof len);
    if (world_rank == 0) {
        if (len > 0) par_bcast(*s, (size_t)len);
        return 0;
    }
    free(*s);
    *s = NULL;
    char *buf = malloc(len >= 0 ? (size_t)len + 1 : 1);
    if (!buf) return -1; /* rank 0 is inside the broadcast below: the job ends */
    if (len > 0) par_bcast(buf, (size_t)len);
    if (len < 0) {
        free(buf);
        return 0;
    }
    buf[len] = 0;
    *s = buf;
    return 0;
}

/* The process count a launcher announces: Open MPI's mpirun, or the PMI
 * variable of MPICH-style launchers; 1 when there is none. */
static long launcher_size(void) {
    const char *v = getenv("OMPI_COMM_WORLD_SIZE");
    if (!v) v = getenv("PMI_SIZE");
    return v ? strtol(v, NULL, 10) : 1;
}

int par_init(int *argc, char ***argv) {
#ifdef MOR_HAVE_MPI
    if (getenv("OMPI_COMM_WORLD_SIZE")) {
        MPI_Init(argc, argv);
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
        MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
        MPI_Comm_size(MPI_COMM_WORLD, &world_size);
        mpi_on = 1;
    } else if (launcher_size() > 1) {
        return cli_usage_error("error: launched as %ld ranks by a launcher that is not Open MPI's "
                               "mpirun, which this build uses; run it under Open MPI's mpirun",
                               launcher_size());
    }
#else
    (void)argc, (void)argv;
    if (launcher_size() > 1)
        return cli_usage_error("error: launched as %ld MPI ranks, but this build has no MPI support "
                               "(build it with Open MPI installed: libopenmpi-dev); refusing to run %ld "
                               "independent copies", launcher_size(), launcher_size());
#endif
    if (world_rank != 0) cli_set_quiet(1);
    return 0;
}

int par_finish(int rc) {
#ifdef MOR_HAVE_MPI
    free(stage);
    stage = NULL;
    stage_cap = 0;
    if (mpi_on) {
        if (rc && world_size > 1) MPI_Abort(MPI_COMM_WORLD, rc);
        MPI_Finalize();
    }
#endif
    (void)mpi_on;
    return rc;
}

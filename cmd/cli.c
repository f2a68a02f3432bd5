/* cli.c - shared command-line helpers (see cli.h). */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static const char *prog_name = "mor";
static int quiet_flag;

void cli_init(const char *prog) {
    const char *slash = strrchr(prog, '/');
    prog_name = slash ? slash + 1 : prog;
}
#ifndef MOR_COMMIT
#define MOR_COMMIT "unknown"
#endif

int cli_version(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--version") != 0) return 0;
    printf("%s %s (commit %s)\n", prog_name, MOR_VERSION, MOR_COMMIT);
    return 1;
}

void cli_set_quiet(int quiet) { quiet_flag = quiet; }
int cli_quiet(void) { return quiet_flag; }

void cli_log(const char *fmt, ...) {
    if (quiet_flag) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int cli_usage_error(const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "%s: ", prog_name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see %s --help)\n", prog_name);
    return EXIT_USAGE;
}

int cli_fail(const mor_error *err) {
    fprintf(stderr, "%s: error: %s\n", prog_name, err->msg[0] ? err->msg : mor_status_name(err->code));
    return err->code == MOR_OK ? EXIT_OK : EXIT_INPUT;
}

int cli_fail_at(const mor_error *err, const char *file, long line) {
    fprintf(stderr, "%s: error: %s:%ld: %s\n", prog_name, file, line,
            err->msg[0] ? err->msg : mor_status_name(err->code));
    return err->code == MOR_OK ? EXIT_OK : EXIT_INPUT;
}

void cli_warn_ctx(long n_ctx, long max_pos) {
    if (quiet_flag || max_pos <= 0 || n_ctx <= max_pos) return;
    fprintf(stderr,
            "%s: warning: context size %ld is larger than the model's max_position_embeddings %ld; "
            "positions past %ld were never trained and the output may degrade\n",
            prog_name, n_ctx, max_pos, max_pos);
}

const char *cli_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        cli_usage_error("option %s needs a value", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

int cli_int(const char *flag, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        cli_usage_error("%s: expected an integer in [%ld, %ld], got '%s'", flag, lo, hi, s);
        return EXIT_USAGE;
    }
    *out = v;
    return 0;
}

int cli_float(const char *flag, const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) {
        cli_usage_error("%s: expected a number in [%g, %g], got '%s'", flag, lo, hi, s);
        return EXIT_USAGE;
    }
    *out = v;
    return 0;
}

int cli_seed(const char *flag, const char *s, unsigned long long *out, int *random) {
    *random = !strcmp(s, "-1");
    if (*random) {
        /* the system's entropy; the clock only where getrandom is unavailable */
        if (getrandom(out, sizeof *out, GRND_NONBLOCK) != (ssize_t)sizeof *out) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            *out = (unsigned long long)ts.tv_sec * 1000000007ULL ^ (unsigned long long)ts.tv_nsec ^
                   ((unsigned long long)getpid() << 32);
        }
        return 0;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    /* strtoull accepts a sign and leading blanks (and wraps "-2"): digits only */
    if (errno || end == s || *end || *s < '0' || *s > '9') {
        cli_usage_error("%s: expected an integer in [0, %llu] or -1 (random), got '%s'", flag,
                        (unsigned long long)-1, s);
        return EXIT_USAGE;
    }
    *out = v;
    return 0;
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cli_progress_begin(cli_progress *p, const char *label, const char *unit) {
    p->label = label;
    p->unit = unit;
    p->start = cli_now();
    p->last_draw = 0;
    p->active = !quiet_flag && isatty(2);
}

void cli_progress_update(cli_progress *p, double done, double total) {
    if (!p->active) return;
    double t = cli_now();
    if (t - p->last_draw < 0.1 && done < total) return;
    p->last_draw = t;
    double el = t - p->start, rate = el > 0 ? done / el : 0;
    double frac = total > 0 ? done / total : 0;
    if (frac > 1) frac = 1;
    char bar[31];
    int fill = (int)(frac * 30);
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = 0;
    double eta = rate > 0 && total > done ? (total - done) / rate : 0;
    fprintf(stderr, "\r%s [%s] %5.1f%% %.1f %s/s ETA %02d:%02d ", p->label, bar, 100 * frac, rate,
            p->unit, (int)(eta / 60), (int)eta % 60);
    fflush(stderr);
}

void cli_progress_end(cli_progress *p) {
    if (p->active) fprintf(stderr, "\r\033[K");
    p->active = 0;
}

/* A terminal in canonical mode hands over a line at a time; Ctrl-D hands over
 * what was typed without a newline, or nothing at the start of a line. Either
 * ends the input here, so one Ctrl-D always does (stdio would wait for a
 * second one after text typed on the line). */
static int read_terminal(int fd, char **buf, size_t *len) {
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    while (b) {
        if (cap - n < 4096 + 1) {
            char *nb = realloc(b, cap * 2);
            if (!nb) break;
            b = nb;
            cap *= 2;
        }
        ssize_t k = read(fd, b + n, cap - n - 1);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            free(b);
            return -1;
        }
        n += (size_t)k;
        if (k == 0 || b[n - 1] != '\n') {
            b[n] = 0;
            *buf = b;
            *len = n;
            return 0;
        }
    }
    free(b);
    return -1;
}

int cli_read_input(const char *path, char **buf, size_t *len) {
    FILE *f = (!path || !strcmp(path, "-")) ? stdin : fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: error: %s: cannot open: %s\n", prog_name, path, strerror(errno));
        return EXIT_INPUT;
    }
    if (f == stdin && isatty(fileno(stdin))) {
        cli_log("%s: reading standard input from the terminal; press Ctrl-D to end it", prog_name);
        if (read_terminal(fileno(stdin), buf, len) == 0) return 0;
        fprintf(stderr, "%s: error: stdin: read failed\n", prog_name);
        return EXIT_INPUT;
    }
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    for (;;) {
        if (!b) break;
        if (cap - n < 2) {
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap *= 2;
        }
        size_t k = fread(b + n, 1, cap - n - 1, f);
        n += k;
        if (k == 0) break;
    }
    int bad = ferror(f) || !b;
    if (f != stdin) fclose(f);
    if (bad) {
        free(b);
        fprintf(stderr, "%s: error: %s: read failed\n", prog_name, path ? path : "stdin");
        return EXIT_INPUT;
    }
    b[n] = 0;
    *buf = b;
    *len = n;
    return 0;
}


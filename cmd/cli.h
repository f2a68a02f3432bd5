/* cli.h - the small layer every mor tool shares: logging to stderr, --quiet,
 * progress bars on a terminal, number parsing and exit codes. */
#ifndef MOR_CLI_H
#define MOR_CLI_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "mor.h"

enum { EXIT_OK = 0, EXIT_USAGE = 1, EXIT_INPUT = 2, EXIT_VALIDATION = 3 };

/* Tool name for messages, and whether logs are silenced (--quiet). */
void cli_init(const char *prog);
/* `prog --version` (the first argument): prints the tool's name, libmor's
 * version and the commit it was built from on stdout and returns 1 (the
 * tool then exits 0); else 0. */
int cli_version(int argc, char **argv);
void cli_set_quiet(int quiet);
int cli_quiet(void);

/* Informational line on stderr (silenced by --quiet). */
void cli_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "prog: message" on stderr, always. Returns EXIT_USAGE. */
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints err->msg and returns the exit code for its status. */
int cli_fail(const mor_error *err);
/* The same for an error in one line of an input file: "prog: error: FILE:LINE: msg". */
int cli_fail_at(const mor_error *err, const char *file, long line);
/* Warns (unless quiet) when the context size asked for (-c; 0 = the model's)
 * is longer than the model's max_position_embeddings: positions it was never
 * trained on. */
void cli_warn_ctx(long n_ctx, long max_pos);

/* The value after a flag: argv[++*i], or a usage error if missing. */
const char *cli_value(int argc, char **argv, int *i);
/* Strict numbers: the whole string must parse, within [lo, hi]. 0 = ok. */
int cli_int(const char *flag, const char *s, long lo, long hi, long *out);
int cli_float(const char *flag, const char *s, double lo, double hi, double *out);
/* A seed: an integer in [0, 2^64 - 1], or -1 for a random one (*random set,
 * *out drawn from the system's entropy). 0 = ok. */
int cli_seed(const char *flag, const char *s, unsigned long long *out, int *random);

/* A progress bar with rate and ETA, drawn only when stderr is a terminal and
 * not quiet. unit names what is counted ("tok", "MB"). */
typedef struct cli_progress {
    const char *label, *unit;
    double start, last_draw;
    int active;
} cli_progress;
void cli_progress_begin(cli_progress *p, const char *label, const char *unit);
void cli_progress_update(cli_progress *p, double done, double total);
void cli_progress_end(cli_progress *p);

/* Reads all of a FILE (stdin when path is NULL or "-") into a NUL-terminated
 * buffer; 0 on success, else prints the error and returns an exit code.
 * From a terminal it first logs a one-line hint, and one Ctrl-D ends the
 * input (at the start of a line or after text typed on it). */
int cli_read_input(const char *path, char **buf, size_t *len);

/* Seconds from a monotonic clock. */
double cli_now(void);



#endif

/* testutil.h - helpers shared by the cmocka suites. */
#ifndef MOR_TESTUTIL_H
#define MOR_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka.h needs the three headers above first */
#include <cmocka.h>

/* ||a-b|| / ||b|| (0 when both are zero). */
double rel_err(const float *a, const float *b, size_t n);
/* Reads a whole file (NUL-terminated); fails the test if it cannot. */
char *read_all(const char *path, size_t *len);
/* Reads raw little-endian float32 / int32 arrays. *n = element count. */
float *read_f32(const char *path, size_t *n);
int32_t *read_i32(const char *path, size_t *n);
/* Runs a shell command; returns its exit status (-1 if it could not run).
 * stdout and stderr are captured into malloc'ed strings if non-NULL. */
int run_cmd(const char *cmd, char **out, char **errout);
/* Path of a tool: $MOR_BIN/name (default bin/name). Static buffer. */
const char *tool(const char *name);
/* A fresh empty temporary directory (static buffer, removed at exit). */
const char *tmp_dir(void);

#endif

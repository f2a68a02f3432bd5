/* testutil.h - helpers shared by the cmocka suites. */
#ifndef MOR_TESTUTIL_H
#define MOR_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka.h needs the three headers above first */
#include <cmocka.h>
#include <jansson.h>

#include "config.h"
#include "mor.h"

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
/* tmp_dir()/name; the last eight results stay valid (static buffers). */
const char *tmp_path(const char *name);
/* 1 if path exists (stat succeeds). */
int file_exists(const char *path);
/* Files in tmp_dir() whose name contains ".tmp." (left by a failed write). */
int tmp_leftovers(void);
/* Fails the test unless e->msg contains needle. */
void check_msg(const mor_error *e, const char *needle);
/* Parses the YAML config file at path into *c; fails the test on an error. */
void read_config(const char *path, mor_config *c);
/* A model built in memory from a YAML config and a safetensors file of its
 * tensors (the reference fixtures); fails the test on an error. */
mor_model *open_model(const char *config_path, const char *model_path);
/* Parses the JSON file at path; fails the test on an error. */
json_t *read_json(const char *path);
/* Mean next-token NLL (nats, in double) of a row of n tokens from its
 * (n, V) logits: position i predicts tokens[i + 1]. */
double mean_nll(const float *logits, const int32_t *tokens, int n, int V);

#endif

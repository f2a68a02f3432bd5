/* testutil.c - helpers shared by the cmocka suites. */
#include "testutil.h"

#include "model.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

double rel_err(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    if (den == 0) return num == 0 ? 0 : INFINITY;
    return sqrt(num / den);
}

char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) fail_msg("short read %s", path);
    fclose(f);
    buf[n] = 0;
    if (len) *len = (size_t)n;
    return buf;
}

float *read_f32(const char *path, size_t *n) {
    size_t len;
    char *b = read_all(path, &len);
    *n = len / 4;
    return (float *)b;
}

int32_t *read_i32(const char *path, size_t *n) {
    size_t len;
    char *b = read_all(path, &len);
    *n = len / 4;
    return (int32_t *)b;
}

static char *slurp_fd(FILE *f) {
    size_t cap = 4096, len = 0;
    char *s = malloc(cap);
    size_t k;
    while ((k = fread(s + len, 1, cap - len - 1, f)) > 0) {
        len += k;
        if (cap - len < 2) s = realloc(s, cap *= 2);
    }
    s[len] = 0;
    return s;
}

int run_cmd(const char *cmd, char **out, char **errout) {
    char errpath[] = "/tmp/mor-test-err-XXXXXX";
    int efd = mkstemp(errpath);
    if (efd < 0) return -1;
    close(efd);
    size_t n = strlen(cmd) + strlen(errpath) + 16;
    char *full = malloc(n);
    snprintf(full, n, "%s 2>%s", cmd, errpath);
    FILE *p = popen(full, "r");
    free(full);
    if (!p) return -1;
    char *o = slurp_fd(p);
    int st = pclose(p);
    if (out) *out = o; else free(o);
    if (errout) {
        FILE *ef = fopen(errpath, "rb");
        *errout = ef ? slurp_fd(ef) : strdup("");
        if (ef) fclose(ef);
    }
    unlink(errpath);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

const char *tool(const char *name) {
    static char buf[4096];
    const char *dir = getenv("MOR_BIN");
    snprintf(buf, sizeof buf, "%s/%s", dir && *dir ? dir : "bin", name);
    return buf;
}

static char tmpdir_path[256];
static void rm_tmp(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir_path);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir_path);
}

const char *tmp_dir(void) {
    if (!tmpdir_path[0]) {
        snprintf(tmpdir_path, sizeof tmpdir_path, "/tmp/mor-test-XXXXXX");
        if (!mkdtemp(tmpdir_path)) fail_msg("mkdtemp failed");
        atexit(rm_tmp);
    }
    return tmpdir_path;
}

const char *tmp_path(const char *name) {
    static char buf[8][700];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmp_dir(), name);
    return buf[k];
}

int file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

int tmp_leftovers(void) {
    DIR *d = opendir(tmp_dir());
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) n += strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    return n;
}

void check_msg(const mor_error *e, const char *needle) {
    if (!strstr(e->msg, needle)) fail_msg("message '%s' lacks '%s'", e->msg, needle);
}

void read_config(const char *path, mor_config *c) {
    size_t len;
    char *text = read_all(path, &len);
    mor_error e = {0};
    if (mor_config_parse_yaml(text, len, path, c, &e)) fail_msg("%s", e.msg);
    free(text);
}

json_t *read_json(const char *path) {
    size_t len;
    char *text = read_all(path, &len);
    json_error_t je;
    json_t *j = json_loadb(text, len, 0, &je);
    free(text);
    if (!j) fail_msg("%s: %s", path, je.text);
    return j;
}

double mean_nll(const float *logits, const int32_t *tokens, int n, int V) {
    double nll = 0;
    for (int i = 0; i + 1 < n; i++) {
        const float *l = logits + (size_t)i * V;
        double mx = l[0], sum = 0;
        for (int v = 1; v < V; v++) mx = l[v] > mx ? l[v] : mx;
        for (int v = 0; v < V; v++) sum += exp(l[v] - mx);
        nll += mx + log(sum) - l[tokens[i + 1]];
    }
    return n > 1 ? nll / (n - 1) : 0;
}

mor_model *open_model(const char *config_path, const char *model_path) {
    mor_model *m = calloc(1, sizeof *m);
    mor_error e = {0};
    read_config(config_path, &m->cfg);
    if (mor_config_validate(&m->cfg, config_path, &e)) fail_msg("%s", e.msg);
    if (mor_st_open(model_path, &m->file, &e)) fail_msg("%s", e.msg);
    if (mor_model_bind(m, &e)) fail_msg("%s", e.msg);
    return m;
}

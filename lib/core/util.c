/* util.c - errors, whole-file reads, atomic writes, number formats, clocks. */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

const char *mor_status_name(mor_status s) {
    switch (s) {
    case MOR_OK: return "ok";
    case MOR_EIO: return "io";
    case MOR_EFORMAT: return "format";
    case MOR_ECONFIG: return "config";
    case MOR_EUNSUPPORTED: return "unsupported";
    case MOR_ENOMEM: return "out of memory";
    case MOR_EARG: return "argument";
    }
    return "unknown";
}

mor_status mor_fail(mor_error *err, mor_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

mor_status mor_read_file(const char *path, char **buf, size_t *len, mor_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return mor_fail(err, MOR_EIO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    if (!b) {
        fclose(f);
        return mor_fail(err, MOR_ENOMEM, "%s: out of memory", path);
    }
    for (;;) {
        if (cap - n < 2) {
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                fclose(f);
                return mor_fail(err, MOR_ENOMEM, "%s: out of memory", path);
            }
            b = nb;
            cap *= 2;
        }
        size_t k = fread(b + n, 1, cap - n - 1, f);
        n += k;
        if (k == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(b);
        return mor_fail(err, MOR_EIO, "%s: read error", path);
    }
    b[n] = 0;
    *buf = b;
    if (len) *len = n;
    return MOR_OK;
}

mor_status mor_atomic_open(mor_atomic_file *a, const char *path, mor_error *err) {
    memset(a, 0, sizeof *a);
    size_t n = strlen(path) + 16;
    a->path = strdup(path);
    a->tmp_path = malloc(n);
    if (!a->path || !a->tmp_path) {
        mor_atomic_abort(a);
        return mor_fail(err, MOR_ENOMEM, "%s: out of memory", path);
    }
    snprintf(a->tmp_path, n, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(a->tmp_path);
    if (fd < 0) {
        mor_status st = mor_fail(err, MOR_EIO, "%s: cannot create: %s", path, strerror(errno));
        free(a->tmp_path);
        a->tmp_path = NULL;
        mor_atomic_abort(a);
        return st;
    }
    fchmod(fd, 0644);
    a->f = fdopen(fd, "wb");
    if (!a->f) {
        close(fd);
        mor_atomic_abort(a);
        return mor_fail(err, MOR_EIO, "%s: cannot open for writing", path);
    }
    return MOR_OK;
}

mor_status mor_atomic_commit(mor_atomic_file *a, mor_error *err) {
    mor_status st = MOR_OK;
    if (fflush(a->f) != 0 || fsync(fileno(a->f)) != 0)
        st = mor_fail(err, MOR_EIO, "%s: write failed: %s", a->path, strerror(errno));
    if (fclose(a->f) != 0 && st == MOR_OK)
        st = mor_fail(err, MOR_EIO, "%s: close failed: %s", a->path, strerror(errno));
    a->f = NULL;
    if (st == MOR_OK && rename(a->tmp_path, a->path) != 0)
        st = mor_fail(err, MOR_EIO, "%s: rename failed: %s", a->path, strerror(errno));
    if (st != MOR_OK) {
        mor_atomic_abort(a);
        return st;
    }
    free(a->tmp_path);
    free(a->path);
    memset(a, 0, sizeof *a);
    return MOR_OK;
}

void mor_atomic_abort(mor_atomic_file *a) {
    if (a->f) fclose(a->f);
    if (a->tmp_path) unlink(a->tmp_path);
    free(a->tmp_path);
    free(a->path);
    memset(a, 0, sizeof *a);
}

float mor_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: renormalise */
            exp = 127 - 15 + 1;
            while (!(man & 0x400)) {
                man <<= 1;
                exp--;
            }
            man &= 0x3ff;
            u = sign | (exp << 23) | (man << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

int mor_physical_cores(void) {
    /* Count distinct (physical id, core id) pairs; fall back to online CPUs. */
    FILE *f = fopen("/proc/cpuinfo", "r");
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (!f) return online > 0 ? (int)online : 1;
    char line[256];
    int phys = -1, seen[1024][2], nseen = 0;
    while (fgets(line, sizeof line, f)) {
        int v;
        if (sscanf(line, "physical id : %d", &v) == 1) phys = v;
        else if (sscanf(line, "core id : %d", &v) == 1) {
            int dup = 0;
            for (int i = 0; i < nseen; i++) dup |= seen[i][0] == phys && seen[i][1] == v;
            if (!dup && nseen < 1024) {
                seen[nseen][0] = phys;
                seen[nseen][1] = v;
                nseen++;
            }
        }
    }
    fclose(f);
    if (nseen > 0) return nseen;
    return online > 0 ? (int)online : 1;
}

size_t mor_utf8_char_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80) return 1;
    if ((c & 0xe0) == 0xc0) len = 2, cp = c & 0x1f;
    else if ((c & 0xf0) == 0xe0) len = 3, cp = c & 0x0f;
    else if ((c & 0xf8) == 0xf0) len = 4, cp = c & 0x07;
    else return 0;
    if (len > n) return 0;
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[k] & 0x3f);
    }
    /* overlong forms, surrogates, beyond U+10FFFF */
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
        return 0;
    return len;
}

int mor_utf8_valid(const char *s, size_t n, size_t *bad_offset) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t len = mor_utf8_char_len(u + i, n - i);
        if (!len) {
            if (bad_offset) *bad_offset = i;
            return 0;
        }
        i += len;
    }
    return 1;
}

void *mor_alloc_big(size_t bytes) {
    void *p = NULL;
    size_t align = bytes >= (2u << 20) ? (2u << 20) : 64;
    if (posix_memalign(&p, align, bytes ? bytes : 64) != 0) return NULL;
#ifdef MADV_HUGEPAGE
    if (bytes >= (2u << 20)) madvise(p, bytes, MADV_HUGEPAGE);
#endif
    return p;
}

void mor_free_big(void *p) { free(p); }

void mor_sb_add(mor_strbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

/* io.c - byte sinks and sources over stdio, optionally zstd-compressed.
 *
 * A sink writes plain bytes or one zstd frame (with a content checksum). A
 * source sniffs the first four bytes for the zstd magic, so a pipe can carry
 * either form without a flag, and decodes any number of concatenated frames:
 * `cat a.zst b.zst` reads as the concatenation of the two payloads. */
#include "io.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "util.h"

static const uint8_t zstd_magic[4] = {0x28, 0xb5, 0x2f, 0xfd};

/* ------------------------------------------------------------------------ */
/* Sinks                                                                    */

static mor_status write_all(mor_sink *s, const void *buf, size_t n, mor_error *err) {
    if (n && fwrite(buf, 1, n, s->f) != n)
        return mor_fail(err, MOR_EIO, "%s: write failed: %s", s->name, strerror(errno));
    return MOR_OK;
}

mor_status mor_sink_open(mor_sink *s, FILE *f, const char *name, int zstd_level, mor_error *err) {
    memset(s, 0, sizeof *s);
    s->f = f;
    s->name = name ? name : "(output)";
    if (zstd_level <= 0) return MOR_OK;
    if (zstd_level > ZSTD_maxCLevel())
        return mor_fail(err, MOR_EARG, "%s: zstd level %d is above the maximum %d", s->name,
                        zstd_level, ZSTD_maxCLevel());
    ZSTD_CStream *z = ZSTD_createCStream();
    s->zcap = ZSTD_CStreamOutSize();
    s->zbuf = malloc(s->zcap);
    if (!z || !s->zbuf) {
        ZSTD_freeCStream(z);
        mor_sink_free(s);
        return mor_fail(err, MOR_ENOMEM, "%s: out of memory for the zstd encoder", s->name);
    }
    s->zstd = z;
    size_t r = ZSTD_CCtx_setParameter(z, ZSTD_c_compressionLevel, zstd_level);
    if (!ZSTD_isError(r)) r = ZSTD_CCtx_setParameter(z, ZSTD_c_checksumFlag, 1);
    /* compress on every core (same output format); a libzstd built without
     * threads refuses, and one thread is fine then */
    if (!ZSTD_isError(r) && mor_physical_cores() > 1)
        (void)ZSTD_CCtx_setParameter(z, ZSTD_c_nbWorkers, mor_physical_cores());
    if (ZSTD_isError(r)) {
        mor_sink_free(s);
        return mor_fail(err, MOR_EARG, "%s: zstd: %s", name, ZSTD_getErrorName(r));
    }
    return MOR_OK;
}

/* Runs the encoder over `in` with the given directive until it has consumed
 * the input (and, for flush/end, emptied its internal buffers). */
static mor_status sink_compress(mor_sink *s, ZSTD_inBuffer *in, ZSTD_EndDirective mode,
                                mor_error *err) {
    for (;;) {
        ZSTD_outBuffer out = {s->zbuf, s->zcap, 0};
        size_t left = ZSTD_compressStream2(s->zstd, &out, in, mode);
        if (ZSTD_isError(left))
            return mor_fail(err, MOR_EIO, "%s: zstd: %s", s->name, ZSTD_getErrorName(left));
        mor_status st = write_all(s, s->zbuf, out.pos, err);
        if (st) return st;
        int done = mode == ZSTD_e_continue ? in->pos == in->size : left == 0;
        if (done) return MOR_OK;
    }
}

mor_status mor_sink_write(mor_sink *s, const void *buf, size_t n, mor_error *err) {
    mor_status st;
    if (!s->zstd) {
        st = write_all(s, buf, n, err);
    } else {
        ZSTD_inBuffer in = {buf, n, 0};
        st = sink_compress(s, &in, ZSTD_e_continue, err);
    }
    if (!st) s->written += n;
    return st;
}

mor_status mor_sink_flush(mor_sink *s, mor_error *err) {
    if (s->zstd) {
        ZSTD_inBuffer in = {NULL, 0, 0};
        mor_status st = sink_compress(s, &in, ZSTD_e_flush, err);
        if (st) return st;
    }
    if (fflush(s->f) != 0)
        return mor_fail(err, MOR_EIO, "%s: write failed: %s", s->name, strerror(errno));
    return MOR_OK;
}

mor_status mor_sink_finish(mor_sink *s, mor_error *err) {
    if (s->zstd) {
        ZSTD_inBuffer in = {NULL, 0, 0};
        mor_status st = sink_compress(s, &in, ZSTD_e_end, err);
        if (st) return st;
    }
    if (fflush(s->f) != 0 || ferror(s->f))
        return mor_fail(err, MOR_EIO, "%s: write failed: %s", s->name, strerror(errno));
    return MOR_OK;
}

void mor_sink_free(mor_sink *s) {
    if (!s) return;
    ZSTD_freeCStream(s->zstd);
    free(s->zbuf);
    s->zstd = NULL;
    s->zbuf = NULL;
    s->zcap = 0;
}

/* ------------------------------------------------------------------------ */
/* Sources                                                                  */

/* Sources read f's file descriptor with read(2), not through stdio: on a
 * pipe, read(2) returns what has arrived, so a reader gets each frame as soon
 * as the writer flushes it. (A stdio read of a fixed count would wait for
 * bytes the writer has not produced yet: the zstd decoder always asks for
 * the next block's header along with the current block.) */

/* One read(2), retried on EINTR; -1 on error. */
static ssize_t read_some(int fd, void *buf, size_t n) {
    for (;;) {
        ssize_t k = read(fd, buf, n);
        if (k >= 0 || errno != EINTR) return k;
    }
}

/* Reads until n bytes or end of input; -1 on error. */
static ssize_t read_full(int fd, void *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t k = read_some(fd, (uint8_t *)buf + got, n - got);
        if (k < 0) return -1;
        if (k == 0) break;
        got += (size_t)k;
    }
    return (ssize_t)got;
}

/* What a zstd input of zin compressed bytes may expand to (saturating). */
static uint64_t zstd_cap(uint64_t zin) {
    uint64_t r = zin > UINT64_MAX / MOR_ZSTD_MAX_RATIO ? UINT64_MAX : zin * MOR_ZSTD_MAX_RATIO;
    return r > MOR_ZSTD_FREE_BYTES ? r : MOR_ZSTD_FREE_BYTES;
}

mor_status mor_source_open(mor_source *s, FILE *f, const char *name, mor_error *err) {
    memset(s, 0, sizeof *s);
    s->f = f;
    s->name = name ? name : "(input)";
    s->in_size = UINT64_MAX;
    /* a regular file says how much it holds, so header claims can be
     * checked before anything is allocated for them */
    int fd = fileno(f);
    struct stat sb;
    off_t pos;
    if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && (pos = lseek(fd, 0, SEEK_CUR)) >= 0 &&
        pos <= sb.st_size)
        s->in_size = (uint64_t)(sb.st_size - pos);
    ssize_t k = read_full(fd, s->peek, 4);
    if (k < 0) return mor_fail(err, MOR_EIO, "%s: read failed: %s", s->name, strerror(errno));
    s->npeek = (int)k;
    if (s->npeek < 4 || memcmp(s->peek, zstd_magic, 4) != 0) return MOR_OK;
    s->zstd = ZSTD_createDStream();
    s->in_cap = ZSTD_DStreamInSize();
    s->inbuf = malloc(s->in_cap);
    if (s->zstd &&
        ZSTD_isError(ZSTD_DCtx_setParameter(s->zstd, ZSTD_d_windowLogMax, MOR_ZSTD_WINDOW_LOG_MAX))) {
        mor_source_free(s);
        return mor_fail(err, MOR_ENOMEM, "%s: cannot bound the zstd decoder's window", s->name);
    }
    if (!s->zstd || !s->inbuf) {
        mor_source_free(s);
        return mor_fail(err, MOR_ENOMEM, "%s: out of memory for the zstd decoder", s->name);
    }
    /* the magic is part of the first frame: hand it to the decoder */
    memcpy(s->inbuf, s->peek, 4);
    s->in_len = 4;
    s->npeek = 0;
    return MOR_OK;
}

static mor_status read_plain(mor_source *s, uint8_t *buf, size_t n, size_t *got, mor_error *err) {
    ssize_t r = read_full(fileno(s->f), buf, n);
    *got = r > 0 ? (size_t)r : 0;
    if (r < 0)
        return mor_fail(err, MOR_EIO, "%s: read failed at byte %llu: %s", s->name,
                        (unsigned long long)(s->offset + (uint64_t)s->npeek), strerror(errno));
    return MOR_OK;
}

static mor_status read_zstd(mor_source *s, uint8_t *buf, size_t n, size_t *got, mor_error *err) {
    ZSTD_outBuffer out = {buf, 0, 0};
    *got = 0;
    while (out.pos < n) {
        /* when the last call filled the output, the decoder may still hold
         * bytes: drain it before asking for more input */
        if (s->in_pos == s->in_len && !s->zpending) {
            ssize_t k = read_some(fileno(s->f), s->inbuf, s->in_cap);
            if (k < 0) return mor_fail(err, MOR_EIO, "%s: read failed: %s", s->name, strerror(errno));
            s->in_pos = 0;
            s->in_len = (size_t)k;
            if (k == 0) {
                *got = out.pos;
                if (s->zframe_open)
                    return mor_fail(err, MOR_EFORMAT,
                                    "%s: truncated zstd data: the input ends inside a frame "
                                    "(after %llu decompressed bytes)",
                                    s->name, (unsigned long long)s->zout);
                break; /* clean end after a complete frame */
            }
        }
        /* the decoder may write at most one byte past what the ratio allows,
         * whatever the caller's buffer: a bomb is stopped right at the limit */
        uint64_t allow = zstd_cap(s->zin) - s->zout;
        out.size = n - out.pos <= allow ? n : out.pos + (size_t)allow + 1;
        ZSTD_inBuffer in = {s->inbuf, s->in_len, s->in_pos};
        size_t out_before = out.pos, in_before = in.pos;
        size_t r = ZSTD_decompressStream(s->zstd, &out, &in);
        s->in_pos = in.pos;
        s->zin += in.pos - in_before;
        s->zout += out.pos - out_before;
        *got = out.pos;
        if (ZSTD_getErrorCode(r) == ZSTD_error_frameParameter_windowTooLarge)
            return mor_fail(err, MOR_EFORMAT,
                            "%s: a zstd frame asks for a window above %d MiB (written with --long "
                            "or --ultra?): refused (zstd -d lifts the limit)",
                            s->name, 1 << (MOR_ZSTD_WINDOW_LOG_MAX - 20));
        if (ZSTD_isError(r))
            return mor_fail(err, MOR_EFORMAT, "%s: zstd: %s (after %llu decompressed bytes)",
                            s->name, ZSTD_getErrorName(r), (unsigned long long)s->zout);
        /* the decoder consumes a block before it emits it, so real data never
         * runs ahead of the ratio; a bomb is stopped here, before the caller
         * asks for (and allocates) more */
        if (s->zout > zstd_cap(s->zin))
            return mor_fail(err, MOR_EFORMAT,
                            "%s: zstd data expands more than %d-fold (%llu compressed bytes gave "
                            "%llu): refused as a likely zstd bomb (zstd -d lifts the limit)",
                            s->name, MOR_ZSTD_MAX_RATIO, (unsigned long long)s->zin,
                            (unsigned long long)s->zout);
        /* r == 0: a frame just ended; the decoder starts the next one by
         * itself. A call that moved nothing says nothing about frames. */
        if (out.pos != out_before || in.pos != in_before) s->zframe_open = r != 0;
        s->zpending = out.pos == out.size;
    }
    return MOR_OK;
}

/* Bytes from the input itself, past the read-ahead. */
static mor_status read_input(mor_source *s, uint8_t *buf, size_t n, size_t *got, mor_error *err) {
    return s->zstd ? read_zstd(s, buf, n, got, err) : read_plain(s, buf, n, got, err);
}

mor_status mor_source_read(mor_source *s, void *buf, size_t n, size_t *got, mor_error *err) {
    size_t k = (size_t)s->npeek < n ? (size_t)s->npeek : n, more = 0;
    if (k) { /* the read-ahead first */
        memcpy(buf, s->peek, k);
        memmove(s->peek, s->peek + k, (size_t)s->npeek - k);
        s->npeek -= (int)k;
    }
    mor_status st = k < n ? read_input(s, (uint8_t *)buf + k, n - k, &more, err) : MOR_OK;
    s->offset += k + more;
    if (got) *got = k + more;
    return st;
}

mor_status mor_source_peek(mor_source *s, void *buf, size_t n, size_t *got, mor_error *err) {
    if (n > MOR_SOURCE_PEEK)
        return mor_fail(err, MOR_EARG, "%s: cannot look %zu bytes ahead (at most %d)", s->name, n,
                        MOR_SOURCE_PEEK);
    mor_status st = MOR_OK;
    if ((size_t)s->npeek < n) {
        size_t more = 0;
        st = read_input(s, s->peek + s->npeek, n - (size_t)s->npeek, &more, err);
        s->npeek += (int)more;
    }
    size_t k = (size_t)s->npeek < n ? (size_t)s->npeek : n;
    if (k) memcpy(buf, s->peek, k);
    if (got) *got = k;
    return st;
}

mor_status mor_source_read_all(mor_source *s, char **buf, size_t *len, mor_error *err) {
    *buf = NULL;
    *len = 0;
    size_t cap = 0, n = 0;
    char *b = NULL;
    mor_status st = MOR_OK;
    for (;;) {
        if (cap - n < 2) {
            size_t grown_cap = cap ? 2 * cap : 1 << 16;
            char *grown = grown_cap > cap ? realloc(b, grown_cap) : NULL;
            if (!grown) {
                st = mor_fail(err, MOR_ENOMEM, "%s: out of memory after %zu bytes", s->name, n);
                break;
            }
            b = grown;
            cap = grown_cap;
        }
        size_t want = cap - n - 1, got;
        if ((st = mor_source_read(s, b + n, want, &got, err))) break;
        n += got;
        if (got < want) break; /* end of input */
    }
    if (st) {
        free(b);
        return st;
    }
    b[n] = 0;
    *buf = b;
    *len = n;
    return MOR_OK;
}

uint64_t mor_source_limit(const mor_source *s) {
    if (s->in_size == UINT64_MAX) return UINT64_MAX;
    uint64_t total = s->zstd ? zstd_cap(s->in_size) : s->in_size;
    return total > s->offset ? total - s->offset : 0;
}

mor_status mor_source_check_claim(const mor_source *s, uint64_t n, const char *label,
                                  const char *what, mor_error *err) {
    uint64_t left = mor_source_limit(s);
    if (n <= left || !s->zstd) return MOR_OK;
    return mor_fail(err, MOR_EFORMAT,
                    "%s: %s (%llu bytes), but the input (%llu bytes of zstd data) may expand to "
                    "only %llu more (the limit is %d-fold, at least %llu MiB; zstd -d lifts it)",
                    label, what, (unsigned long long)n, (unsigned long long)s->in_size,
                    (unsigned long long)left, MOR_ZSTD_MAX_RATIO,
                    (unsigned long long)(MOR_ZSTD_FREE_BYTES >> 20));
}

void mor_source_free(mor_source *s) {
    if (!s) return;
    ZSTD_freeDStream(s->zstd);
    free(s->inbuf);
    s->zstd = NULL;
    s->inbuf = NULL;
    s->in_pos = s->in_len = s->in_cap = 0;
}

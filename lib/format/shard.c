/* shard.c - token shards (man/mor-shard.5).
 *
 *   0  char[8] "MORSHARD"      24 u32 vocab_size
 *   8  u32 version (1)          28 i32 eos_id (-1 = none)
 *  12  u32 id_bytes (2 or 4)    32 u64 n_docs
 *  16  u64 n_tokens             40 u64 checksum of the id bytes
 *  48  16 reserved bytes (zero)
 *  64  n_tokens ids, little-endian, id_bytes each
 *
 * The counts are only known at the end, so the writer streams the ids into a
 * plain temporary file and patches the header on commit; a compressed shard
 * is then made from that file in one pass. */
#include "shard.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io.h"
#include "util.h"

#define SHARD_ZSTD_LEVEL 3
#define CHUNK (1 << 16) /* bytes of ids converted at a time; a multiple of 8 */

/* The checksum: FNV-1a over 64-bit little-endian words of the id bytes (the
 * last word zero-padded). Each step is a bijection of the running value, so
 * any change confined to one word always changes the result. */
#define CK_INIT UINT64_C(0xcbf29ce484222325)
static uint64_t ck_update(uint64_t h, const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i += 8) {
        uint64_t w = 0;
        size_t k = n - i < 8 ? n - i : 8;
        for (size_t j = 0; j < k; j++) w |= (uint64_t)p[i + j] << (8 * j);
        h = (h ^ w) * UINT64_C(0x100000001b3);
    }
    return h;
}

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32; }

static void encode_header(uint8_t *h, const mor_shard_info *in) {
    memset(h, 0, MOR_SHARD_HEADER_SIZE);
    memcpy(h, MOR_SHARD_MAGIC, 8);
    put32(h + 8, in->version);
    put32(h + 12, in->id_bytes);
    put64(h + 16, in->n_tokens);
    put32(h + 24, in->vocab_size);
    put32(h + 28, (uint32_t)in->eos_id);
    put64(h + 32, in->n_docs);
    put64(h + 40, in->checksum);
}

static uint32_t id_bytes_for(uint32_t vocab) { return vocab <= 65536 ? 2 : 4; }

/* ------------------------------------------------------------------------ */
/* Writer                                                                   */

struct mor_shard_writer {
    mor_atomic_file plain; /* the ids as written; the output itself when uncompressed */
    int zstd_level;
    mor_shard_info info;
    uint8_t buf[CHUNK];    /* encoded ids not yet written */
    size_t nbuf;
    uint64_t hash;
};

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && strcmp(s + n - k, suf) == 0;
}

mor_status mor_shard_writer_open(const char *path, uint32_t vocab_size, int32_t eos_id,
                                 int zstd_level, mor_shard_writer **out, mor_error *err) {
    *out = NULL;
    if (vocab_size == 0 || vocab_size > INT32_MAX)
        return mor_fail(err, MOR_EARG, "%s: vocab_size %u out of range [1, %d]", path, vocab_size, INT32_MAX);
    if (eos_id < -1 || (eos_id >= 0 && (uint32_t)eos_id >= vocab_size))
        return mor_fail(err, MOR_EARG, "%s: eos_id %d is not -1 nor below vocab_size %u", path, eos_id,
                        vocab_size);
    if (zstd_level == MOR_SHARD_ZSTD_AUTO) zstd_level = ends_with(path, ".zst") ? SHARD_ZSTD_LEVEL : 0;
    if (zstd_level < 0) return mor_fail(err, MOR_EARG, "%s: bad zstd level %d", path, zstd_level);
    mor_shard_writer *w = calloc(1, sizeof *w);
    if (!w) return mor_fail(err, MOR_ENOMEM, "out of memory");
    w->zstd_level = zstd_level;
    w->info = (mor_shard_info){.version = MOR_SHARD_VERSION, .id_bytes = id_bytes_for(vocab_size),
                               .vocab_size = vocab_size, .eos_id = eos_id,
                               .compressed = zstd_level > 0};
    w->hash = CK_INIT;
    mor_status st = mor_atomic_open(&w->plain, path, err);
    if (st) {
        free(w);
        return st;
    }
    uint8_t h[MOR_SHARD_HEADER_SIZE] = {0}; /* placeholder until commit */
    if (fwrite(h, 1, sizeof h, w->plain.f) != sizeof h) {
        st = mor_fail(err, MOR_EIO, "%s: write failed: %s", path, strerror(errno));
        mor_shard_writer_abort(w);
        return st;
    }
    *out = w;
    return MOR_OK;
}

static mor_status flush_ids(mor_shard_writer *w, mor_error *err) {
    w->hash = ck_update(w->hash, w->buf, w->nbuf);
    if (w->nbuf && fwrite(w->buf, 1, w->nbuf, w->plain.f) != w->nbuf)
        return mor_fail(err, MOR_EIO, "%s: write failed: %s", w->plain.path, strerror(errno));
    w->nbuf = 0;
    return MOR_OK;
}

mor_status mor_shard_writer_append(mor_shard_writer *w, const int32_t *ids, size_t n, mor_error *err) {
    uint32_t ib = w->info.id_bytes;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (uint32_t)ids[i] >= w->info.vocab_size)
            return mor_fail(err, MOR_EARG, "%s: token id %d (appended as token %llu) is outside [0, %u)",
                            w->plain.path, ids[i], (unsigned long long)(w->info.n_tokens + i),
                            w->info.vocab_size);
    }
    for (size_t i = 0; i < n; i++) {
        if (w->nbuf + ib > CHUNK) {
            mor_status st = flush_ids(w, err);
            if (st) return st;
        }
        uint32_t v = (uint32_t)ids[i];
        for (uint32_t b = 0; b < ib; b++) w->buf[w->nbuf++] = (uint8_t)(v >> (8 * b));
    }
    w->info.n_tokens += n;
    return MOR_OK;
}

mor_status mor_shard_writer_end_doc(mor_shard_writer *w, mor_error *err) {
    if (w->info.eos_id >= 0) {
        mor_status st = mor_shard_writer_append(w, &w->info.eos_id, 1, err);
        if (st) return st;
    }
    w->info.n_docs++;
    return MOR_OK;
}

uint64_t mor_shard_writer_n_tokens(const mor_shard_writer *w) { return w->info.n_tokens; }

void mor_shard_writer_abort(mor_shard_writer *w) {
    if (!w) return;
    mor_atomic_abort(&w->plain);
    free(w);
}

/* Compresses the finished plain file (header included) into path. */
static mor_status compress_to(mor_shard_writer *w, mor_error *err) {
    mor_atomic_file out;
    mor_status st = mor_atomic_open(&out, w->plain.path, err);
    if (st) return st;
    mor_sink sink;
    st = mor_sink_open(&sink, out.f, out.path, w->zstd_level, err);
    uint64_t total = MOR_SHARD_HEADER_SIZE + w->info.n_tokens * w->info.id_bytes;
    int fd = fileno(w->plain.f);
    for (uint64_t off = 0; off < total && !st;) {
        size_t k = total - off < CHUNK ? (size_t)(total - off) : CHUNK;
        ssize_t r = pread(fd, w->buf, k, (off_t)off);
        if (r <= 0) {
            st = mor_fail(err, MOR_EIO, "%s: cannot read back the temporary file: %s", out.path,
                          r < 0 ? strerror(errno) : "short file");
            break;
        }
        st = mor_sink_write(&sink, w->buf, (size_t)r, err);
        off += (uint64_t)r;
    }
    if (!st) st = mor_sink_finish(&sink, err);
    mor_sink_free(&sink);
    if (st) {
        mor_atomic_abort(&out);
        return st;
    }
    return mor_atomic_commit(&out, err);
}

mor_status mor_shard_writer_commit(mor_shard_writer *w, mor_error *err) {
    mor_status st = flush_ids(w, err);
    w->info.checksum = w->hash;
    uint8_t h[MOR_SHARD_HEADER_SIZE];
    encode_header(h, &w->info);
    if (!st && (fflush(w->plain.f) != 0 || pwrite(fileno(w->plain.f), h, sizeof h, 0) != (ssize_t)sizeof h))
        st = mor_fail(err, MOR_EIO, "%s: write failed: %s", w->plain.path, strerror(errno));
    if (!st && w->zstd_level > 0) {
        st = compress_to(w, err);
        mor_atomic_abort(&w->plain); /* the plain copy was only scratch */
    } else if (!st) {
        st = mor_atomic_commit(&w->plain, err);
    }
    mor_shard_writer_abort(w);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Reader                                                                   */

static mor_status parse_header(const char *path, const uint8_t *h, size_t got, mor_shard_info *in,
                               mor_error *err) {
    if (got < 8 || memcmp(h, MOR_SHARD_MAGIC, 8) != 0)
        return mor_fail(err, MOR_EFORMAT, "%s: bad magic at byte 0: not a token shard (expected \"%s\")",
                        path, MOR_SHARD_MAGIC);
    if (got < MOR_SHARD_HEADER_SIZE)
        return mor_fail(err, MOR_EFORMAT, "%s: truncated header: %zu of %d bytes", path, got,
                        MOR_SHARD_HEADER_SIZE);
    in->version = get32(h + 8);
    in->id_bytes = get32(h + 12);
    in->n_tokens = get64(h + 16);
    in->vocab_size = get32(h + 24);
    in->eos_id = (int32_t)get32(h + 28);
    in->n_docs = get64(h + 32);
    in->checksum = get64(h + 40);
    if (in->version != MOR_SHARD_VERSION)
        return mor_fail(err, MOR_EUNSUPPORTED, "%s: shard version %u at byte 8 is not supported (expected %d)",
                        path, in->version, MOR_SHARD_VERSION);
    if (in->vocab_size == 0 || in->vocab_size > INT32_MAX)
        return mor_fail(err, MOR_EFORMAT, "%s: vocab_size %u at byte 24 is out of range", path,
                        in->vocab_size);
    if (in->id_bytes != id_bytes_for(in->vocab_size))
        return mor_fail(err, MOR_EFORMAT, "%s: id_bytes %u at byte 12 does not match vocab_size %u (expected %u)",
                        path, in->id_bytes, in->vocab_size, id_bytes_for(in->vocab_size));
    if (in->eos_id < -1 || (in->eos_id >= 0 && (uint32_t)in->eos_id >= in->vocab_size))
        return mor_fail(err, MOR_EFORMAT, "%s: eos_id %d at byte 28 is not -1 nor below vocab_size %u",
                        path, in->eos_id, in->vocab_size);
    if (in->n_tokens > (UINT64_C(1) << 40))
        return mor_fail(err, MOR_EFORMAT, "%s: n_tokens %llu at byte 16 is absurd", path,
                        (unsigned long long)in->n_tokens);
    return MOR_OK;
}

/* Reads and checks the header from src; on success src is positioned at
 * the first id, and the ids the header promises fit in what src can hold. */
static mor_status read_header(mor_source *src, const char *path, mor_shard_info *in, mor_error *err) {
    uint8_t h[MOR_SHARD_HEADER_SIZE];
    size_t got = 0;
    mor_status st = mor_source_read(src, h, sizeof h, &got, err);
    if (!st) st = parse_header(path, h, got, in, err);
    if (st) return st;
    in->compressed = src->zstd != NULL;
    char what[96];
    snprintf(what, sizeof what, "the header promises %llu tokens", (unsigned long long)in->n_tokens);
    return mor_source_check_claim(src, in->n_tokens * in->id_bytes, path, what, err);
}

/* Opens path and reads the header (read_header). */
static mor_status open_shard(const char *path, FILE **fp, mor_source *src, mor_shard_info *in,
                             mor_error *err) {
    *fp = fopen(path, "rb");
    if (!*fp) return mor_fail(err, MOR_EIO, "%s: cannot open: %s", path, strerror(errno));
    mor_status st = mor_source_open(src, *fp, path, err);
    if (!st) st = read_header(src, path, in, err);
    if (st) {
        mor_source_free(src);
        fclose(*fp);
        *fp = NULL;
    }
    return st;
}

mor_status mor_shard_read_info(const char *path, mor_shard_info *info, mor_error *err) {
    FILE *fp;
    mor_source src;
    mor_status st = open_shard(path, &fp, &src, info, err);
    if (st) return st;
    mor_source_free(&src);
    fclose(fp);
    return MOR_OK;
}

/* Reads the ids the header promises, then checks nothing follows them and
 * the checksum. */
static mor_status load_ids(mor_source *src, const char *path, const mor_shard_info *in,
                           int32_t **ids, mor_error *err) {
    const uint32_t ib = in->id_bytes;
    mor_status st = MOR_OK;
    /* a count the input cannot be checked against (a pipe) must not cause a
     * huge allocation: grow as ids arrive */
    size_t cap = in->n_tokens < (1u << 20) ? (size_t)in->n_tokens : (1u << 20);
    int32_t *out = malloc(sizeof(int32_t) * (cap ? cap : 1)); // (n_tokens)
    uint8_t *buf = malloc(CHUNK);
    if (!out || !buf) st = mor_fail(err, MOR_ENOMEM, "%s: out of memory", path);
    uint64_t done = 0, hash = CK_INIT;
    while (!st && done < in->n_tokens) {
        uint64_t want = (in->n_tokens - done) * ib;
        size_t k = want < CHUNK ? (size_t)want : CHUNK, got;
        if ((st = mor_source_read(src, buf, k, &got, err))) break;
        if (got < k || got % ib) {
            st = mor_fail(err, MOR_EFORMAT,
                          "%s: truncated: the header promises %llu tokens (%llu bytes after the "
                          "%d-byte header), the data ends at byte %llu (token %llu)",
                          path, (unsigned long long)in->n_tokens, (unsigned long long)(in->n_tokens * ib),
                          MOR_SHARD_HEADER_SIZE, (unsigned long long)src->offset,
                          (unsigned long long)(done + got / ib));
            break;
        }
        size_t m = got / ib;
        if (done + m > cap) {
            while (done + m > cap) cap = cap * 2 < in->n_tokens ? cap * 2 : (size_t)in->n_tokens;
            int32_t *grown = realloc(out, sizeof(int32_t) * cap);
            if (!grown) {
                st = mor_fail(err, MOR_ENOMEM, "%s: out of memory for %zu tokens", path, cap);
                break;
            }
            out = grown;
        }
        for (size_t i = 0; i < m; i++) {
            const uint8_t *p = buf + i * ib;
            uint32_t v = ib == 2 ? (uint32_t)p[0] | (uint32_t)p[1] << 8 : get32(p);
            if (v >= in->vocab_size) {
                st = mor_fail(err, MOR_EFORMAT, "%s: token %llu (byte %llu) is %u, not below vocab_size %u",
                              path, (unsigned long long)(done + i),
                              (unsigned long long)(MOR_SHARD_HEADER_SIZE + (done + i) * ib), v,
                              in->vocab_size);
                break;
            }
            out[done + i] = (int32_t)v;
        }
        hash = ck_update(hash, buf, got);
        done += m;
    }
    if (!st) {
        uint8_t extra;
        size_t got;
        st = mor_source_read(src, &extra, 1, &got, err);
        if (!st && got)
            st = mor_fail(err, MOR_EFORMAT, "%s: trailing bytes after the %llu tokens (from byte %llu)",
                          path, (unsigned long long)in->n_tokens,
                          (unsigned long long)(MOR_SHARD_HEADER_SIZE + in->n_tokens * ib));
    }
    if (!st && hash != in->checksum)
        st = mor_fail(err, MOR_EFORMAT,
                      "%s: checksum mismatch: the header (byte 40) says %016llx, the ids hash to "
                      "%016llx: the data is corrupt",
                      path, (unsigned long long)in->checksum, (unsigned long long)hash);
    free(buf);
    if (st) {
        free(out);
        return st;
    }
    *ids = out;
    return MOR_OK;
}

mor_status mor_shard_load_source(mor_source *src, int32_t **ids, size_t *n, mor_shard_info *info,
                                 mor_error *err) {
    *ids = NULL;
    *n = 0;
    mor_shard_info in;
    mor_status st = read_header(src, src->name, &in, err);
    if (!st) st = load_ids(src, src->name, &in, ids, err);
    if (st) return st;
    *n = (size_t)in.n_tokens;
    if (info) *info = in;
    return MOR_OK;
}

mor_status mor_shard_load(const char *path, int32_t **ids, size_t *n, mor_shard_info *info,
                          mor_error *err) {
    *ids = NULL;
    *n = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) return mor_fail(err, MOR_EIO, "%s: cannot open: %s", path, strerror(errno));
    mor_source src;
    mor_status st = mor_source_open(&src, fp, path, err);
    if (!st) st = mor_shard_load_source(&src, ids, n, info, err);
    mor_source_free(&src);
    fclose(fp);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Documents of a text file                                                 */

int mor_next_document(const char *text, size_t len, mor_doc_split split, size_t *off,
                      size_t *begin, size_t *end) {
    while (*off < len) {
        size_t o = *off, e = len;
        if (split == MOR_SPLIT_LINE) {
            const char *nl = memchr(text + o, '\n', len - o);
            if (nl) e = (size_t)(nl - text);
        } else if (split == MOR_SPLIT_BLANK) {
            const char *b = memmem(text + o, len - o, "\n\n", 2);
            if (b) e = (size_t)(b - text);
        }
        size_t next = e < len ? e + 1 : len;
        while (split == MOR_SPLIT_BLANK && next < len && text[next] == '\n') next++;
        *off = next;
        size_t a = o;
        while (a < e && (text[a] == '\n' || text[a] == '\r')) a++;
        if (a < e) { /* blank lines are no document */
            *begin = a;
            *end = e;
            return 1;
        }
    }
    return 0;
}

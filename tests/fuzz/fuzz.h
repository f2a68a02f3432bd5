/* fuzz.h - what the libFuzzer harnesses share (tests/fuzz/README.md).
 *
 * Most parsers take bytes in memory and the harnesses call them directly.
 * A few take only a path, or a FILE they read through its descriptor; for
 * those the harness puts each input into one memory file (memfd_create),
 * made once per process and rewritten per input, and passes its
 * /proc/self/fd path: nothing touches a disk. */
#ifndef MOR_FUZZ_H
#define MOR_FUZZ_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A harness that finds its own bug calls this: libFuzzer saves the input. */
#define FUZZ_CHECK(cond)                                                                      \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);          \
            abort();                                                                          \
        }                                                                                     \
    } while (0)

/* The memory file and its path ("/proc/self/fd/N"). */
static int fuzz_memfd = -1;
static char fuzz_memfd_path[64];

/* Replaces the memory file's contents with data and rewinds it; returns its
 * path. A failure here is the harness's, not the parser's: abort. */
static inline const char *fuzz_put(const uint8_t *data, size_t size) {
    if (fuzz_memfd < 0) {
        fuzz_memfd = memfd_create("fuzz-input", 0);
        FUZZ_CHECK(fuzz_memfd >= 0);
        snprintf(fuzz_memfd_path, sizeof fuzz_memfd_path, "/proc/self/fd/%d", fuzz_memfd);
    }
    FUZZ_CHECK(ftruncate(fuzz_memfd, 0) == 0);
    for (size_t at = 0; at < size;) {
        ssize_t n = pwrite(fuzz_memfd, data + at, size - at, (off_t)at);
        FUZZ_CHECK(n > 0);
        at += (size_t)n;
    }
    FUZZ_CHECK(lseek(fuzz_memfd, 0, SEEK_SET) == 0);
    return fuzz_memfd_path;
}

/* The input as a FILE read from its start; close it with fclose. */
static inline FILE *fuzz_put_file(const uint8_t *data, size_t size) {
    fuzz_put(data, size);
    int fd = open(fuzz_memfd_path, O_RDONLY); /* its own offset, at 0 */
    FUZZ_CHECK(fd >= 0);
    FILE *f = fdopen(fd, "rb");
    FUZZ_CHECK(f != NULL);
    return f;
}

/* Where the committed test data lives: tests/data under the current
 * directory (make fuzz runs from the repository root), or $MOR_FUZZ_DATA. */
static inline const char *fuzz_data_path(const char *rel, char *buf, size_t cap) {
    const char *dir = getenv("MOR_FUZZ_DATA");
    snprintf(buf, cap, "%s/%s", dir && *dir ? dir : "tests/data", rel);
    return buf;
}

/* A private directory for the few files a parser's API makes a harness
 * write: /dev/shm/mor-fuzz-PID (memory), made once. A harness removes it at
 * exit; after a crash run.sh does, knowing the PID. */
static char fuzz_dir[64];
static inline const char *fuzz_tmpdir(void) {
    if (!fuzz_dir[0]) {
        snprintf(fuzz_dir, sizeof fuzz_dir, "/dev/shm/mor-fuzz-%d", (int)getpid());
        FUZZ_CHECK(mkdir(fuzz_dir, 0700) == 0 || errno == EEXIST); /* a reused PID */
    }
    return fuzz_dir;
}

/* Tool code in cmd/ prints its errors on stderr (cli_fail), which would
 * print once per execution. Appending -close_fd_mask=2 to the arguments
 * (LLVMFuzzerInitialize runs before libFuzzer parses them) has libFuzzer
 * send its own and the sanitizers' reports to a copy of stderr and close
 * the original. */
static inline void fuzz_close_stderr(int *argc, char ***argv) {
    char **a = calloc((size_t)*argc + 2, sizeof *a);
    FUZZ_CHECK(a != NULL);
    memcpy(a, *argv, (size_t)*argc * sizeof *a);
    a[(*argc)++] = "-close_fd_mask=2";
    a[*argc] = NULL;
    *argv = a; /* lives as long as the process */
}

#endif

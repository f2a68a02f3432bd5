/* fuzz_eval_tasks.c - lm-eval task files for mor-eval: eval_task_load
 * (cmd/eval_tasks.c) reads every input three ways: multiple-choice JSONL,
 * cloze JSONL and cloze text (one passage per line, chosen by a .txt name).
 * It takes a path: the input goes to a memory file (fuzz.h), which a
 * symbolic link ending in .txt, made once in fuzz_tmpdir(), also names. Its
 * errors are printed on stderr, which LLVMFuzzerInitialize closes. */
#include "eval_common.h"
#include "fuzz.h"

static char txt_path[128];

static void cleanup(void) {
    unlink(txt_path);
    rmdir(fuzz_tmpdir());
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    fuzz_close_stderr(argc, argv);
    fuzz_put((const uint8_t *)"", 0); /* makes the memory file */
    snprintf(txt_path, sizeof txt_path, "%s/task.txt", fuzz_tmpdir());
    FUZZ_CHECK(symlink(fuzz_memfd_path, txt_path) == 0);
    atexit(cleanup);
    return 0;
}

static void check(const eval_task *t, int cloze) {
    FUZZ_CHECK(t->n >= 1);
    for (size_t i = 0; i < t->n; i++) {
        const eval_item *it = &t->items[i];
        FUZZ_CHECK(it->n >= 1 && (!cloze || it->n == 1));
        FUZZ_CHECK(it->gold >= 0 && it->gold < it->n);
        for (int c = 0; c < it->n; c++) FUZZ_CHECK(it->ctx[c] && it->cont[c]);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_put(data, size);
    const char *paths[3] = {path, path, txt_path};
    for (int mode = 0; mode < 3; mode++) {
        eval_task t;
        int cloze = mode > 0;
        if (eval_task_load(paths[mode], cloze, &t)) continue;
        check(&t, cloze);
        eval_task_free(&t);
    }
    return 0;
}

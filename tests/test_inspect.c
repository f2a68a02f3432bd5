/* test_inspect.c - the MoR features of the tools: `mor-inspect depths` over
 * hand-made routing traces in both encodings (histogram counts, --top order,
 * colour escapes, the HTML page's structure, clear failures on bad traces),
 * mor-generate --trace on a freshly initialised MoR model, and the MoR
 * section of `mor-inspect MODEL.mor` checked against lib/core/mor_cost.h. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "io.h"
#include "mor_cost.h"
#include "stream.h"
#include "testutil.h"

#define CONFIG "configs/tiny-mor-expert-r3.yaml"

static char mor_path[600], vanilla_model[600];

static int setup(void **state) {
    (void)state;
    char cmd[2048];
    snprintf(mor_path, sizeof mor_path, "%s/mor.mor", tmp_dir());
    snprintf(vanilla_model, sizeof vanilla_model, "%s/vanilla.mor", tmp_dir());
    snprintf(cmd, sizeof cmd,
             "%s init --config " CONFIG " --tokenizer tests/data/stories260K-hf/tokenizer.json -o %s -s 1 -q",
             tool("mor-convert"), mor_path);
    if (run_cmd(cmd, NULL, NULL)) return -1;
    snprintf(cmd, sizeof cmd, "%s hf tests/data/stories260K-hf -o %s -q", tool("mor-convert"), vanilla_model);
    return run_cmd(cmd, NULL, NULL);
}

/* ---- the hand-made trace ------------------------------------------------------
 * N_R = 3, 14 tokens. Depths: 1 x6, 2 x3, 3 x5; steps run: 14, 8, 5.
 * Sent to depth 3: " the" twice (of 3, mean 7/3); " time" and " <b>&" once
 * (of 1, mean 3; " <b>&" sorts first by bytes); " cat" once (of 2, mean 2.5). */
typedef struct {
    const char *text;
    int depth;
} tok;
static const tok toks[] = {{"", 1},     {"Once", 2}, {" upon", 1}, {" a", 1},    {" time", 3},
                           {",", 1},    {" the", 3}, {" cat", 2},  {" <b>&", 3}, {"\n", 1},
                           {" the", 3}, {" cat", 3}, {" the", 1},  {".", 2}};
#define NTOK ((int)(sizeof toks / sizeof toks[0]))

/* Scores as an expert-choice router gives them: >= 0.5 at the steps run, the
 * exit score below 0.5 at the next step, null after. */
static float score_of(int i, int r, int depth) {
    if (r < depth) return 0.5f + 0.03f * (float)((i + r) % 10);
    if (r == depth) return 0.25f;
    return NAN;
}

static void write_file(const char *path, const char *s) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(s, f);
    fclose(f);
}

/* The JSON-lines trace; `bad` replaces line bad_line (1-based) when set. */
static const char *make_jsonl(const char *name, int bad_line, const char *bad) {
    const char *path = tmp_path(name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    int line = 1;
    if (bad_line == line) fprintf(f, "%s\n", bad);
    else fprintf(f, "{\"trace\":\"mor\",\"version\":1,\"model\":\"hand.mor\",\"num_recursion\":3,"
                    "\"routing\":\"causal\",\"type\":\"expert\",\"n_prompt\":4}\n");
    for (int i = 0; i < NTOK; i++) {
        line++;
        if (bad_line == line) {
            fprintf(f, "%s\n", bad);
            continue;
        }
        json_t *o = json_pack("{s:i,s:i,s:s,s:i}", "pos", i, "id", 100 + i, "text", toks[i].text, "depth",
                              toks[i].depth);
        json_t *sc = json_array();
        for (int r = 0; r < 3; r++) {
            float s = score_of(i, r, toks[i].depth);
            json_array_append_new(sc, isnan(s) ? json_null() : json_real(s));
        }
        json_object_set_new(o, "scores", sc);
        char *s = json_dumps(o, JSON_COMPACT);
        fprintf(f, "%s\n", s);
        free(s);
        json_decref(o);
    }
    fclose(f);
    return path;
}

/* The same trace as a tensor stream, built with the library's frame writer
 * from man/mor-trace.5's description; a frame of another kind goes first
 * (readers skip it). depth_at/depth_val: one depth to corrupt (-1 = none). */
static const char *make_stream(const char *name, int depth_at, int depth_val) {
    const char *path = tmp_path(name);
    int32_t pos[NTOK], id[NTOK], depth[NTOK], off[NTOK + 1];
    float scores[NTOK * 3];
    char text[512];
    off[0] = 0;
    for (int i = 0; i < NTOK; i++) {
        pos[i] = i;
        id[i] = 100 + i;
        depth[i] = i == depth_at ? depth_val : toks[i].depth;
        for (int r = 0; r < 3; r++) scores[i * 3 + r] = score_of(i, r, toks[i].depth);
        memcpy(text + off[i], toks[i].text, strlen(toks[i].text));
        off[i + 1] = off[i] + (int32_t)strlen(toks[i].text);
    }
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    mor_sink sink;
    mor_error err = {0};
    assert_int_equal(mor_sink_open(&sink, f, path, 0, &err), MOR_OK);
    mor_frame *fr = mor_frame_new("logits");
    int64_t one[1] = {1}, n[1] = {NTOK}, ns[2] = {NTOK, 3}, nt[1] = {off[NTOK]}, no[1] = {NTOK + 1};
    float x = 1;
    assert_int_equal(mor_frame_add_f32(fr, "logits", 1, one, &x, &err), MOR_OK);
    assert_int_equal(mor_stream_write_frame(&sink, fr, &err), MOR_OK);
    assert_int_equal(mor_frame_reset(fr, "trace", &err), MOR_OK);
    assert_int_equal(mor_frame_meta(fr, "version", "1", &err), MOR_OK);
    assert_int_equal(mor_frame_meta(fr, "model", "hand.mor", &err), MOR_OK);
    assert_int_equal(mor_frame_meta(fr, "num_recursion", "3", &err), MOR_OK);
    assert_int_equal(mor_frame_meta(fr, "routing", "causal", &err), MOR_OK);
    assert_int_equal(mor_frame_meta(fr, "n_prompt", "4", &err), MOR_OK);
    assert_int_equal(mor_frame_add_i32(fr, "pos", 1, n, pos, &err), MOR_OK);
    assert_int_equal(mor_frame_add_i32(fr, "id", 1, n, id, &err), MOR_OK);
    assert_int_equal(mor_frame_add_i32(fr, "depth", 1, n, depth, &err), MOR_OK);
    assert_int_equal(mor_frame_add_f32(fr, "scores", 2, ns, scores, &err), MOR_OK);
    assert_int_equal(mor_frame_add(fr, "text", MOR_ST_U8, 1, nt, text, &err), MOR_OK);
    assert_int_equal(mor_frame_add_i32(fr, "text_offsets", 1, no, off, &err), MOR_OK);
    assert_int_equal(mor_stream_write_frame(&sink, fr, &err), MOR_OK);
    assert_int_equal(mor_sink_finish(&sink, &err), MOR_OK);
    mor_sink_free(&sink);
    mor_frame_free(fr);
    fclose(f);
    return path;
}

static char *inspect_ok(const char *args, const char *input) {
    char cmd[4096], *out, *err;
    if (input) snprintf(cmd, sizeof cmd, "%s depths %s < %s", tool("mor-inspect"), args, input);
    else snprintf(cmd, sizeof cmd, "%s depths %s", tool("mor-inspect"), args);
    int rc = run_cmd(cmd, &out, &err);
    if (rc != 0) fail_msg("'%s' exited %d: %s", cmd, rc, err);
    free(err);
    return out;
}

static void expect_fail(const char *cmd, int code, const char *needle) {
    char *out, *err;
    int rc = run_cmd(cmd, &out, &err);
    if (rc != code) fail_msg("'%s' exited %d, expected %d (%s)", cmd, rc, code, err);
    if (!strstr(err, needle)) fail_msg("'%s': stderr '%s' lacks '%s'", cmd, err, needle);
    free(out);
    free(err);
}

static size_t count_str(const char *s, const char *needle) {
    size_t n = 0;
    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

static json_t *parse_json(const char *s) {
    json_error_t je;
    json_t *o = json_loads(s, 0, &je);
    if (!o) fail_msg("not JSON (%s): %s", je.text, s);
    return o;
}

static long jint(json_t *o, const char *path) {
    /* "a.b" or "a[i].b" lookups are done by the callers; this is one level */
    json_t *v = json_object_get(o, path);
    if (!json_is_integer(v)) fail_msg("no integer '%s'", path);
    return (long)json_integer_value(v);
}

/* Checks the summary JSON of the hand-made trace. */
static void check_summary(json_t *o) {
    assert_int_equal(jint(o, "num_recursion"), 3);
    assert_int_equal(jint(o, "tokens"), NTOK);
    json_t *h = json_object_get(o, "histogram");
    assert_int_equal(json_array_size(h), 3);
    long want[3] = {6, 3, 5}, steps[3] = {14, 8, 5};
    for (int d = 0; d < 3; d++) {
        assert_int_equal(jint(json_array_get(h, (size_t)d), "depth"), d + 1);
        assert_int_equal(jint(json_array_get(h, (size_t)d), "count"), want[d]);
        assert_int_equal(jint(json_array_get(json_object_get(o, "steps"), (size_t)d), "tokens"), steps[d]);
    }
    double mean = json_real_value(json_object_get(o, "mean_depth"));
    assert_true(fabs(mean - 27.0 / 14) < 1e-5);
}

/* ---- depths: statistics ---------------------------------------------------------- */

static void test_depths_histogram(void **state) {
    (void)state;
    const char *jl = make_jsonl("a.jsonl", 0, NULL), *st = make_stream("a.stream", -1, 0);
    char args[1200];
    /* from a file, from stdin, and as a stream: the same numbers */
    snprintf(args, sizeof args, "%s --json", jl);
    char *a = inspect_ok(args, NULL);
    char *b = inspect_ok("--json", jl);
    snprintf(args, sizeof args, "%s --json", st);
    char *c = inspect_ok(args, NULL);
    json_t *ja = parse_json(a), *jb = parse_json(b), *jc = parse_json(c);
    check_summary(ja);
    check_summary(jb);
    check_summary(jc);
    assert_string_equal(json_string_value(json_object_get(jc, "routing")), "causal");
    json_decref(ja);
    json_decref(jb);
    json_decref(jc);
    free(a);
    free(b);
    free(c);
    /* the text report: histogram rows with counts and shares */
    char *t = inspect_ok("--color=never", jl);
    assert_non_null(strstr(t, "      1        6   42.9%  ########################################\n"));
    assert_non_null(strstr(t, "      2        3   21.4%  ####################\n"));
    assert_non_null(strstr(t, "      3        5   35.7%  #################################\n"));
    assert_non_null(strstr(t, "mean depth 1.929"));
    free(t);
}

static void test_depths_top(void **state) {
    (void)state;
    const char *jl = make_jsonl("top.jsonl", 0, NULL);
    char args[1200];
    snprintf(args, sizeof args, "%s --json --top 3", jl);
    char *out = inspect_ok(args, NULL);
    json_t *o = parse_json(out), *top = json_object_get(o, "top");
    assert_int_equal(json_array_size(top), 3);
    const char *want[3] = {" the", " <b>&", " time"};
    long deepest[3] = {2, 1, 1}, count[3] = {3, 1, 1};
    for (int i = 0; i < 3; i++) {
        json_t *e = json_array_get(top, (size_t)i);
        assert_string_equal(json_string_value(json_object_get(e, "text")), want[i]);
        assert_int_equal(jint(e, "deepest"), deepest[i]);
        assert_int_equal(jint(e, "count"), count[i]);
    }
    double mean0 = json_real_value(json_object_get(json_array_get(top, 0), "mean_depth"));
    assert_true(fabs(mean0 - 7.0 / 3) < 1e-5);
    json_decref(o);
    free(out);
    /* --top 10 lists all four texts ever sent to depth 3, " cat" last */
    snprintf(args, sizeof args, "%s --color=never --top 10", jl);
    out = inspect_ok(args, NULL);
    char *the = strstr(out, "\" the\""), *b = strstr(out, "\" <b>&\""), *time = strstr(out, "\" time\""),
         *cat = strstr(out, "\" cat\"");
    assert_true(the && b && time && cat);
    assert_true(the < b && b < time && time < cat);
    assert_null(strstr(out, "\"Once\"")); /* never at depth 3 */
    free(out);
}

/* The separator that starts every token in colour: U+258F, faint. */
#define SEP "\033[2m\xe2\x96\x8f\033[22m"

static void test_depths_color(void **state) {
    (void)state;
    const char *jl = make_jsonl("c.jsonl", 0, NULL);
    char *on = inspect_ok("--color=always", jl);
    assert_non_null(strstr(on, "\033[48;5;"));   /* token backgrounds */
    assert_non_null(strstr(on, "Once\033[0m"));  /* each token closes its colour */
    assert_non_null(strstr(on, "\033[0m\n"));    /* no background across the newline */
    /* the tokens' text, up to the legend: a separator starts every token, so
     * neighbours of the same depth stay apart, and the 4 prompt tokens are
     * underlined as on the HTML page */
    char *legend = strstr(on, "\nlegend: ");
    assert_non_null(legend);
    *legend = 0;
    assert_int_equal(count_str(on, SEP), NTOK);
    assert_int_equal(count_str(on, "\033[4m"), 4);
    assert_non_null(strstr(on, "\033[4m" SEP "Once\033[0m"));
    assert_non_null(strstr(on, "m" SEP " time\033[0m"));
    assert_null(strstr(on, "\033[4m" SEP " time"));
    /* the legend explains both marks */
    assert_non_null(strstr(legend + 1, "\033[4mprompt\033[24m"));
    assert_non_null(strstr(legend + 1, SEP " starts a token"));
    free(on);
    char *off = inspect_ok("--color never", jl);
    assert_null(strchr(off, '\033'));
    assert_non_null(strstr(off, "Once[2] upon[1] a[1] time[3],[1] the[3] cat[2] <b>&[3]\n[1] the[3]"));
    free(off);
    char *aut = inspect_ok("", jl); /* auto: stdout is a pipe here */
    assert_null(strchr(aut, '\033'));
    free(aut);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "%s depths --color=sometimes %s", tool("mor-inspect"), jl);
    expect_fail(cmd, 1, "--color");
}

/* ---- depths --html ------------------------------------------------------------------ */

/* Every element the page uses (besides the void <meta>) is closed, in order. */
static void check_balanced(const char *html) {
    static const char *known[] = {"html", "head", "title", "style", "body", "h1", "h2", "h3", "p", "code",
                                  "sub", "div", "span", "table", "tr", "th", "td"};
    const char *stack[256];
    size_t depth = 0, nk = sizeof known / sizeof known[0];
    for (const char *p = strchr(html, '<'); p; p = strchr(p + 1, '<')) {
        if (p[1] == '!') continue; /* doctype */
        int close = p[1] == '/';
        const char *name = p + 1 + close;
        size_t len = strcspn(name, " >");
        if (len == 4 && !strncmp(name, "meta", 4)) continue;
        const char *k = NULL;
        for (size_t i = 0; i < nk; i++)
            if (strlen(known[i]) == len && !strncmp(known[i], name, len)) k = known[i];
        if (!k) fail_msg("unexpected element <%.*s>", (int)len, name);
        if (!close) {
            assert_true(depth < 256);
            stack[depth++] = k;
        } else {
            if (depth == 0 || stack[depth - 1] != k)
                fail_msg("</%s> closes <%s>", k, depth ? stack[depth - 1] : "(nothing)");
            depth--;
        }
    }
    assert_int_equal(depth, 0);
}

static void test_depths_html(void **state) {
    (void)state;
    const char *jl = make_jsonl("h.jsonl", 0, NULL), *page = tmp_path("page.html");
    char args[1500];
    snprintf(args, sizeof args, "%s --html %s --top 3 -q", jl, page);
    free(inspect_ok(args, NULL));
    size_t n;
    char *html = read_all(page, &n);
    assert_int_equal(strncmp(html, "<!DOCTYPE html>\n<html lang=\"en\">", 31), 0);
    check_balanced(html);
    assert_int_equal(count_str(html, "<span class=\"k "), NTOK); /* one span per token */
    assert_int_equal(count_str(html, "<span class=\"k d3"), 5);
    /* the prompt's tokens are marked; the first has no text (class e) */
    assert_int_equal(count_str(html, " p\" title="), 3);
    assert_int_equal(count_str(html, " p e\" title="), 1);
    assert_int_equal(count_str(html, "<span class=\"sw d"), 3); /* the legend */
    /* a thin line starts every token, as the separator does in a terminal */
    assert_non_null(strstr(html, ".k{border-radius:2px;padding:.1em 0;box-shadow:inset 1px 0 "));
    assert_non_null(strstr(html, "a thin line starts each token"));
    assert_non_null(strstr(html, "title=\"pos 4, id 104, depth 3/3; scores 0.620, 0.650, 0.680\""));
    assert_non_null(strstr(html, "<table class=\"hist\">"));
    assert_non_null(strstr(html, "<tr><td>1</td><td>6</td><td>42.9%</td>"));
    assert_non_null(strstr(html, "<tr><td>3</td><td>5</td><td>35.7%</td>"));
    assert_non_null(strstr(html, "<table class=\"top\">"));
    assert_non_null(strstr(html, "&quot; &lt;b&gt;&amp;&quot;")); /* the top table, escaped */
    assert_non_null(strstr(html, "> &lt;b&gt;&amp;</span>"));     /* the token, escaped */
    assert_null(strstr(html, " <b>&"));
    assert_null(strstr(html, "http"));
    assert_null(strstr(html, "src="));
    assert_null(strstr(html, "<link"));
    assert_null(strstr(html, "<script"));
    free(html);
    /* --html - puts the page on stdout instead of the text report */
    snprintf(args, sizeof args, "%s --html -", jl);
    char *out = inspect_ok(args, NULL);
    assert_int_equal(strncmp(out, "<!DOCTYPE html>", 15), 0);
    assert_null(strstr(out, "depth histogram:"));
    free(out);
}

/* An --html path that cannot be written fails before anything is printed,
 * and the page is written whole or not at all. */
static void test_depths_html_path(void **state) {
    (void)state;
    const char *jl = make_jsonl("hp.jsonl", 0, NULL);
    char cmd[2048], page[800], *out, *err;
    snprintf(page, sizeof page, "%s/no/such/dir/x.html", tmp_dir());
    const char *modes[] = {"", "--json", "--color=always --top 3"};
    for (int i = 0; i < 3; i++) {
        snprintf(cmd, sizeof cmd, "%s depths %s %s --html %s", tool("mor-inspect"), jl, modes[i], page);
        int rc = run_cmd(cmd, &out, &err);
        if (rc != 2) fail_msg("'%s' exited %d, expected 2 (%s)", cmd, rc, err);
        assert_string_equal(out, ""); /* no report before the error */
        if (!strstr(err, "no/such/dir/x.html: cannot create")) fail_msg("'%s': stderr '%s'", cmd, err);
        free(out);
        free(err);
    }
    /* a directory is no page: refused before anything is printed or created */
    snprintf(cmd, sizeof cmd, "%s depths %s --html %s", tool("mor-inspect"), jl, tmp_dir());
    assert_int_equal(run_cmd(cmd, &out, &err), 2);
    assert_string_equal(out, "");
    assert_non_null(strstr(err, ": is a directory; --html expects a file name"));
    free(out);
    free(err);
    /* a page that is written leaves no temporary file behind ... */
    snprintf(page, sizeof page, "%s", tmp_path("whole.html"));
    snprintf(cmd, sizeof cmd, "%s --html %s -q", jl, page);
    free(inspect_ok(cmd, NULL));
    assert_true(file_exists(page));
    assert_int_equal(tmp_leftovers(), 0);
    /* ... and a bad trace writes none */
    snprintf(page, sizeof page, "%s", tmp_path("never.html"));
    snprintf(cmd, sizeof cmd, "%s depths %s --html %s", tool("mor-inspect"),
             make_jsonl("hp_bad.jsonl", 3, "{"), page);
    expect_fail(cmd, 2, "hp_bad.jsonl: line 3");
    assert_false(file_exists(page));
    assert_int_equal(tmp_leftovers(), 0);
}

/* A trace whose token texts are all empty holds no text bytes at all: BOS
 * alone, as mor-generate --trace writes for an empty prompt. Every view and
 * both encodings must cope (clang's UBSan caught NULL + 0 here). */
static void test_depths_empty_texts(void **state) {
    (void)state;
    const char *jl = tmp_path("bos.jsonl");
    write_file(jl, "{\"trace\":\"mor\",\"version\":1,\"num_recursion\":2,\"n_prompt\":1}\n"
                   "{\"pos\":0,\"id\":1,\"text\":\"\",\"depth\":2,\"scores\":[0.9,0.1]}\n"
                   "{\"pos\":1,\"id\":1,\"text\":\"\",\"depth\":1}\n");
    char args[1200];
    snprintf(args, sizeof args, "%s --color=always --top 2", jl);
    char *out = inspect_ok(args, NULL);
    assert_int_equal(count_str(out, "\xe2\x88\x85"), 2); /* U+2205 for each empty token */
    char want[128]; /* the top table: the quoted empty text, 1 of 2 at depth 2, mean 1.5 */
    snprintf(want, sizeof want, "  %4d  %-24s %7d %6d %10.3f\n", 1, "\"\"", 1, 2, 1.5);
    assert_non_null(strstr(out, want));
    free(out);
    snprintf(args, sizeof args, "%s --color=never", jl);
    out = inspect_ok(args, NULL);
    assert_non_null(strstr(out, "\n\n[2][1]\n"));
    free(out);
    snprintf(args, sizeof args, "%s --json --top 1", jl);
    out = inspect_ok(args, NULL);
    assert_non_null(strstr(out, "\"top\":[{\"text\":\"\",\"deepest\":1,\"count\":2,"));
    free(out);
    snprintf(args, sizeof args, "%s --html - --top 1", jl);
    out = inspect_ok(args, NULL);
    assert_int_equal(count_str(out, "&#8709;</span>"), 2);
    free(out);
    /* mor-generate's trace of BOS alone, in both encodings, reads back */
    char cmd[2048], *err;
    const char *st = tmp_path("bos.stream");
    snprintf(cmd, sizeof cmd, "%s -m %s -p '' -n 0 -q --trace -", tool("mor-generate"), mor_path);
    if (run_cmd(cmd, &out, &err)) fail_msg("'%s' failed: %s", cmd, err);
    assert_non_null(strstr(out, "\n{\"pos\":0,\"id\":1,\"text\":\"\",\"depth\":"));
    free(out);
    free(err);
    snprintf(cmd, sizeof cmd, "%s -m %s -p '' -n 0 -q --trace %s --trace-format stream",
             tool("mor-generate"), mor_path, st);
    if (run_cmd(cmd, &out, &err)) fail_msg("'%s' failed: %s", cmd, err);
    free(out);
    free(err);
    snprintf(args, sizeof args, "%s --color=always --top 1", st);
    out = inspect_ok(args, NULL);
    assert_int_equal(count_str(out, "\xe2\x88\x85"), 1);
    free(out);
}

/* The header's strings reach the terminal as safely as token texts do. */
static void test_depths_header_escapes(void **state) {
    (void)state;
    const char *jl = tmp_path("esc.jsonl");
    write_file(jl, "{\"trace\":\"mor\",\"version\":1,\"num_recursion\":1,"
                   "\"model\":\"m\\u001b]0;owned\\u0007.mor\",\"routing\":\"causal\\u001b[2J\"}\n"
                   "{\"pos\":0,\"id\":5,\"text\":\"a\",\"depth\":1}\n");
    char args[1200];
    snprintf(args, sizeof args, "%s --color=never", jl);
    char *out = inspect_ok(args, NULL);
    assert_null(strchr(out, '\033'));
    assert_null(strchr(out, '\a'));
    assert_non_null(strstr(out, "routing causal\xef\xbf\xbd[2J, model m\xef\xbf\xbd]0;owned\xef\xbf\xbd.mor)"));
    free(out);
}

/* Counts agree with their nouns: "1 token", "2 tokens". */
static void test_depths_plurals(void **state) {
    (void)state;
    const char *one = tmp_path("one.jsonl"), *page = tmp_path("one.html");
    write_file(one, "{\"trace\":\"mor\",\"version\":1,\"num_recursion\":1,\"routing\":\"causal\"}\n"
                    "{\"pos\":0,\"id\":5,\"text\":\"a\",\"depth\":1}\n");
    char args[1500];
    snprintf(args, sizeof args, "%s --color=never --html %s -q", one, page);
    char *out = inspect_ok(args, NULL);
    assert_non_null(strstr(out, " (1 run, 1 token, N_R = 1,"));
    assert_non_null(strstr(out, "token[d]: the token ran d of the 1 recursion step\n"));
    free(out);
    char *html = read_all(page, NULL);
    assert_non_null(strstr(html, " 1 token in 1 run "));
    free(html);
    snprintf(args, sizeof args, "%s --color=never", make_jsonl("many.jsonl", 0, NULL));
    out = inspect_ok(args, NULL);
    assert_non_null(strstr(out, " (1 run, 14 tokens, N_R = 3,"));
    assert_non_null(strstr(out, "token[d]: the token ran d of the 3 recursion steps\n"));
    free(out);
}

/* ---- depths: bad traces ---------------------------------------------------------------- */

static void test_depths_bad(void **state) {
    (void)state;
    char cmd[1500];
    const char *mi = tool("mor-inspect");
    snprintf(cmd, sizeof cmd, "%s depths %s", mi, make_jsonl("bad1.jsonl", 3, "{\"pos\":1,\"id\":2,"));
    expect_fail(cmd, 2, "bad1.jsonl: line 3: malformed JSON");
    snprintf(cmd, sizeof cmd, "%s depths %s", mi,
             make_jsonl("bad2.jsonl", 5, "{\"pos\":3,\"id\":7,\"text\":\"x\",\"depth\":4,\"scores\":null}"));
    expect_fail(cmd, 2, "line 5: depth 4 is outside 1..3");
    snprintf(cmd, sizeof cmd, "%s depths %s", mi,
             make_jsonl("bad3.jsonl", 2, "{\"pos\":0,\"id\":7,\"text\":\"x\",\"depth\":0}"));
    expect_fail(cmd, 2, "line 2: depth 0 is outside 1..3");
    snprintf(cmd, sizeof cmd, "%s depths %s", mi,
             make_jsonl("bad4.jsonl", 4, "{\"pos\":0,\"id\":7,\"text\":\"x\",\"depth\":1,\"scores\":[1,2]}"));
    expect_fail(cmd, 2, "line 4: \"scores\" must be null or an array of length 3 (num_recursion)");
    snprintf(cmd, sizeof cmd, "%s depths %s", mi,
             make_jsonl("bad5.jsonl", 1, "{\"pos\":0,\"id\":1,\"text\":\"\",\"depth\":1}"));
    expect_fail(cmd, 2, "line 1: a token before the header line");
    snprintf(cmd, sizeof cmd, "%s depths %s", mi, make_stream("bad.stream", 6, 4));
    expect_fail(cmd, 2, "frame 1 at byte 132: depth[6] = 4 is outside 1..3");
    /* a stream cut inside its second frame */
    const char *st = make_stream("cut.stream", -1, 0);
    snprintf(cmd, sizeof cmd, "head -c 300 %s | %s depths", st, mi);
    expect_fail(cmd, 2, "stdin: frame 1 at byte 132: truncated");
    /* one byte after the second frame's header length: a count without a noun to agree with */
    snprintf(cmd, sizeof cmd, "head -c 141 %s | %s depths", st, mi);
    expect_fail(cmd, 2, "frame 1 at byte 132: truncated: header length ");
    expect_fail(cmd, 2, " exceeds the rest of the input (1)");
    /* runs of a trace share N_R; the message names the first run's */
    const char *two = tmp_path("two_runs.jsonl");
    write_file(two, "{\"trace\":\"mor\",\"version\":1,\"num_recursion\":3}\n"
                    "{\"trace\":\"mor\",\"version\":1,\"num_recursion\":2}\n");
    snprintf(cmd, sizeof cmd, "%s depths %s", mi, two);
    expect_fail(cmd, 2, "line 2: num_recursion 2 differs from the first run's 3");
    write_file(tmp_path("empty.jsonl"), "\n\n");
    snprintf(cmd, sizeof cmd, "%s depths %s", mi, tmp_path("empty.jsonl"));
    expect_fail(cmd, 2, "empty trace");
    snprintf(cmd, sizeof cmd, "%s depths /nonexistent.jsonl", mi);
    expect_fail(cmd, 2, "/nonexistent.jsonl: cannot open");
    snprintf(cmd, sizeof cmd, "%s depths a b", mi);
    expect_fail(cmd, 1, "unexpected argument 'b'");
}

/* ---- mor-generate --trace ------------------------------------------------------------ */

/* Checks a JSON-lines trace of `gen` generated tokens; returns the text of
 * the generated tokens (malloc'ed). */
static char *check_trace_jsonl(const char *s, int gen) {
    const char *nl = strchr(s, '\n');
    assert_non_null(nl);
    char line[4096];
    snprintf(line, sizeof line, "%.*s", (int)(nl - s), s);
    json_t *h = parse_json(line);
    assert_string_equal(json_string_value(json_object_get(h, "trace")), "mor");
    assert_int_equal(jint(h, "version"), 1);
    assert_int_equal(jint(h, "num_recursion"), 3);
    assert_string_equal(json_string_value(json_object_get(h, "routing")), "causal");
    assert_string_equal(json_string_value(json_object_get(h, "model")), mor_path);
    long np = jint(h, "n_prompt");
    assert_true(np >= 2);
    json_decref(h);
    size_t cap = 4096, tl = 0;
    char *text = calloc(1, cap);
    long i = 0;
    for (const char *p = nl + 1; *p; i++) {
        nl = strchr(p, '\n');
        assert_non_null(nl); /* every line ends with a newline */
        snprintf(line, sizeof line, "%.*s", (int)(nl - p), p);
        json_t *o = parse_json(line);
        assert_int_equal(jint(o, "pos"), i);
        long d = jint(o, "depth");
        assert_true(d >= 1 && d <= 3);
        json_t *sc = json_object_get(o, "scores");
        assert_int_equal(json_array_size(sc), 3);
        for (size_t r = 0; r < 3; r++) {
            json_t *v = json_array_get(sc, r);
            assert_true(json_is_number(v) || json_is_null(v));
        }
        /* the causal expert-choice rule (man/mor-trace.5): step 1 always runs,
         * step r runs while its score is >= 0.5, nothing is scored after the exit */
        assert_true(json_is_number(json_array_get(sc, 0)));
        for (long r = 1; r < 3; r++) {
            json_t *v = json_array_get(sc, (size_t)r);
            if (r < d) assert_true(json_number_value(v) >= 0.5);
            else if (r == d) assert_true(json_is_number(v) && json_number_value(v) < 0.5);
            else assert_true(json_is_null(v));
        }
        const char *t = json_string_value(json_object_get(o, "text"));
        assert_non_null(t);
        if (i >= np) {
            size_t k = strlen(t);
            assert_true(tl + k < cap);
            memcpy(text + tl, t, k);
            tl += k;
        }
        json_decref(o);
        p = nl + 1;
    }
    assert_int_equal(i, np + gen); /* one line per prompt and generated token */
    return text;
}

static void test_generate_trace(void **state) {
    (void)state;
    const char *mg = tool("mor-generate"); /* a static buffer: used before the next tool() */
    char cmd[2048], *out, *err;
    const char *flags = "-p 'Once upon a time' -n 8 --temp 0 --ignore-eos -q";
    /* the reference text, without a trace */
    snprintf(cmd, sizeof cmd, "%s -m %s %s", mg, mor_path, flags);
    assert_int_equal(run_cmd(cmd, &out, &err), 0);
    char *want = out;
    free(err);
    /* --trace FILE: the text is unchanged, the trace covers it */
    const char *tf = tmp_path("gen.jsonl");
    snprintf(cmd, sizeof cmd, "%s -m %s %s --trace %s --routing causal", mg, mor_path, flags, tf);
    assert_int_equal(run_cmd(cmd, &out, &err), 0);
    assert_string_equal(out, want);
    free(out);
    free(err);
    char *trace = read_all(tf, NULL);
    char *text = check_trace_jsonl(trace, 8);
    assert_string_equal(text, want);
    free(text);
    /* --trace -: stdout carries only the trace, identical to the file */
    snprintf(cmd, sizeof cmd, "%s -m %s %s --trace -", mg, mor_path, flags);
    assert_int_equal(run_cmd(cmd, &out, &err), 0);
    assert_string_equal(out, trace);
    free(out);
    free(err);
    /* the stream format reads back to the same statistics */
    const char *sf = tmp_path("gen.stream.zst");
    snprintf(cmd, sizeof cmd, "%s -m %s %s --trace %s --trace-format stream", mg, mor_path, flags, sf);
    assert_int_equal(run_cmd(cmd, &out, &err), 0);
    free(out);
    free(err);
    char args[1200];
    snprintf(args, sizeof args, "%s --json --top 5", tf);
    char *a = inspect_ok(args, NULL);
    snprintf(args, sizeof args, "%s --json --top 5", sf);
    char *b = inspect_ok(args, NULL);
    char *tf_pos = strstr(a, ",\"num_recursion\""), *sf_pos = strstr(b, ",\"num_recursion\"");
    assert_true(tf_pos && sf_pos);
    assert_string_equal(tf_pos, sf_pos); /* all but the trace's name */
    free(a);
    free(b);
    free(trace);
    free(want);
    /* byte-fallback tokens: a split character goes with the token that
     * completes it, so the texts are valid UTF-8 and concatenate back */
    snprintf(cmd, sizeof cmd, "%s -m %s -p 'caf\xc3\xa9 \xe2\x98\x83' -n 0 -q --trace -",
             tool("mor-generate"), mor_path);
    if (run_cmd(cmd, &out, &err)) fail_msg("'%s' failed: %s", cmd, err);
    text = check_trace_jsonl(out, 0);
    assert_string_equal(text, ""); /* nothing generated */
    free(text);
    size_t cat = 0;
    char all[64] = "";
    int empty = 0;
    for (const char *p = strchr(out, '\n') + 1; *p; p = strchr(p, '\n') + 1) {
        char line[1024];
        snprintf(line, sizeof line, "%.*s", (int)(strchr(p, '\n') - p), p);
        json_t *o = parse_json(line);
        const char *t = json_string_value(json_object_get(o, "text"));
        assert_null(strstr(t, "\xef\xbf\xbd")); /* no U+FFFD */
        empty += !*t;
        assert_true(cat + strlen(t) < sizeof all);
        strcpy(all + cat, t);
        cat += strlen(t);
        json_decref(o);
    }
    assert_string_equal(all, "caf\xc3\xa9 \xe2\x98\x83");
    assert_true(empty >= 2); /* BOS and at least one leading byte of the snowman */
    free(out);
    free(err);
}

static void test_generate_routing_flags(void **state) {
    (void)state;
    char cmd[2048], *out, *err;
    const char *mg = tool("mor-generate");
    snprintf(cmd, sizeof cmd, "%s -m %s -p hi --routing topk", mg, mor_path);
    expect_fail(cmd, 1, "generation is always causal");
    snprintf(cmd, sizeof cmd, "%s -m %s -p hi --routing sideways", mg, mor_path);
    expect_fail(cmd, 1, "expected causal or topk");
    snprintf(cmd, sizeof cmd, "%s -m %s -p hi -n 2 --trace -", mg, vanilla_model);
    expect_fail(cmd, 2, "not a MoR model");
    snprintf(cmd, sizeof cmd, "%s -m %s -p hi --trace - --print-ids", mg, mor_path);
    expect_fail(cmd, 1, "--trace -");
    snprintf(cmd, sizeof cmd, "%s -m %s -p hi --trace-format stream", mg, mor_path);
    expect_fail(cmd, 1, "--trace-format needs --trace");
    /* the routing mode is reported on stderr */
    snprintf(cmd, sizeof cmd, "%s -m %s -p hi -n 2 --temp 0", mg, mor_path);
    assert_int_equal(run_cmd(cmd, &out, &err), 0);
    assert_non_null(strstr(err, "routing: causal"));
    free(out);
    free(err);
}

/* ---- mor-inspect MODEL: the MoR section ---------------------------------------------- */

static void test_inspect_mor(void **state) {
    (void)state;
    mor_config c;
    mor_error e = {0};
    read_config(CONFIG, &c);
    assert_int_equal(mor_config_validate(&c, CONFIG, &e), MOR_OK);
    mor_param_count pc;
    mor_cost_params(&c, &pc);
    mor_kv_cost kv;
    mor_cost_kv(&c, 2, &kv);
    mor_flops fl;
    mor_cost_flops(&c, 128, &fl); /* train.max_length of the config */

    char cmd[2048], *out;
    snprintf(cmd, sizeof cmd, "%s %s --json", tool("mor-inspect"), mor_path);
    assert_int_equal(run_cmd(cmd, &out, NULL), 0);
    json_t *o = parse_json(out);
    json_t *rec = json_object_get(o, "recursion"), *map = json_object_get(rec, "map");
    long want_map[5] = {0, 1, 1, 1, 2};
    assert_int_equal(json_array_size(map), 5);
    for (size_t l = 0; l < 5; l++) assert_int_equal(json_integer_value(json_array_get(map, l)), want_map[l]);
    json_t *p2 = json_array_get(json_object_get(rec, "positions"), 2);
    assert_int_equal(jint(p2, "step"), 2);
    assert_true(json_is_true(json_object_get(p2, "shared")));
    assert_true(json_is_null(json_object_get(json_array_get(json_object_get(rec, "positions"), 0), "step")));
    json_t *cnt = json_object_get(o, "param_counts");
    assert_int_equal(jint(cnt, "unique"), pc.unique);
    assert_int_equal(jint(cnt, "unrolled"), pc.unrolled);
    assert_int_equal(jint(cnt, "routers"), 3 * 64);
    assert_int_equal(jint(cnt, "total"), pc.total);
    /* the stored tensors agree with the cost model */
    assert_int_equal(jint(json_object_get(o, "parameters"), "non_embedding"), pc.unique);
    json_t *routing = json_object_get(o, "routing");
    assert_string_equal(json_string_value(json_object_get(routing, "type")), "expert");
    assert_string_equal(json_string_value(json_object_get(routing, "router_type")), "linear");
    assert_int_equal(json_array_size(json_object_get(routing, "routers")), 3);
    json_t *cost = json_object_get(o, "cost"), *strat = json_object_get(cost, "strategies");
    assert_int_equal(jint(cost, "seq_len"), 128);
    assert_int_equal(json_array_size(strat), 4); /* vanilla, recursive, cache, share */
    int found = 0;
    for (size_t i = 0; i < json_array_size(strat); i++) {
        json_t *s = json_array_get(strat, i);
        if (!json_is_true(json_object_get(s, "current"))) continue;
        found++;
        assert_string_equal(json_string_value(json_object_get(s, "strategy")), "cache");
        double bytes = json_number_value(json_object_get(s, "kv_bytes_per_token_bf16"));
        double flops = json_number_value(json_object_get(s, "flops_per_token"));
        assert_true(fabs(bytes - kv.bytes_per_token) < 1e-6);
        assert_true(fabs(flops - fl.total) <= 1e-6 * fl.total);
        json_t *act = json_object_get(s, "active");
        for (size_t r = 0; r < 3; r++)
            assert_int_equal(json_integer_value(json_array_get(act, r)), fl.active[r]);
    }
    assert_int_equal(found, 1);
    json_decref(o);
    free(out);

    snprintf(cmd, sizeof cmd, "%s %s", tool("mor-inspect"), mor_path);
    assert_int_equal(run_cmd(cmd, &out, NULL), 0);
    assert_non_null(strstr(out, "map: [0, 1, 1, 1, 2]\n"));
    char want[128];
    snprintf(want, sizeof want, "unique (stored): %lld\n", (long long)pc.unique);
    assert_non_null(strstr(out, want));
    snprintf(want, sizeof want, "unrolled (own weights at every position): %lld\n", (long long)pc.unrolled);
    assert_non_null(strstr(out, want));
    assert_non_null(strstr(out, "        2      1     2     yes\n")); /* position 2: layer 1, step 2 */
    assert_non_null(strstr(out, "* cache "));
    free(out);

    /* a vanilla model has no recursion section but still its cost */
    snprintf(cmd, sizeof cmd, "%s %s --json --seq-len 64", tool("mor-inspect"), vanilla_model);
    assert_int_equal(run_cmd(cmd, &out, NULL), 0);
    o = parse_json(out);
    assert_null(json_object_get(o, "recursion"));
    assert_int_equal(jint(json_object_get(o, "cost"), "seq_len"), 64);
    assert_int_equal(json_array_size(json_object_get(json_object_get(o, "cost"), "strategies")), 1);
    json_decref(o);
    free(out);
}

/* ---- mor-inspect --config: the same report from a config alone -------------------- */

static double jnum(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    if (!json_is_number(v)) fail_msg("no number '%s'", key);
    return json_number_value(v);
}

static void check_close(double got, double want, const char *what) {
    if (fabs(got - want) > 1e-9 * fabs(want)) fail_msg("%s: %.17g, cost model %.17g", what, got, want);
}

static void test_inspect_config(void **state) {
    (void)state;
    const char *cfg_path = "configs/360m-mor-expert-r3-kvshare.yaml";
    mor_config c;
    mor_error e = {0};
    read_config(cfg_path, &c);
    assert_int_equal(mor_config_validate(&c, cfg_path, &e), MOR_OK);
    mor_param_count pc;
    mor_cost_params(&c, &pc);
    mor_kv_cost kv;
    mor_cost_kv(&c, 2, &kv);
    mor_flops fl;
    mor_cost_flops(&c, c.train.max_length, &fl);

    char cmd[2048], *out, *err;
    snprintf(cmd, sizeof cmd, "%s --config %s --json", tool("mor-inspect"), cfg_path);
    assert_int_equal(run_cmd(cmd, &out, NULL), 0);
    json_t *o = parse_json(out);
    assert_string_equal(json_string_value(json_object_get(o, "config")), cfg_path);
    assert_null(json_object_get(o, "tensors")); /* nothing loaded */
    json_t *cnt = json_object_get(o, "param_counts");
    assert_int_equal(jint(cnt, "layer"), pc.layer);
    assert_int_equal(jint(cnt, "unique"), pc.unique);
    assert_int_equal(jint(cnt, "unrolled"), pc.unrolled);
    assert_int_equal(jint(cnt, "routers"), pc.routers);
    assert_int_equal(jint(cnt, "embedding"), pc.embedding);
    assert_int_equal(jint(cnt, "buffers"), pc.buffers);
    assert_int_equal(jint(cnt, "total"), pc.total);
    json_t *cost = json_object_get(o, "cost"), *f = json_object_get(cost, "flops");
    assert_int_equal(jint(cost, "seq_len"), c.train.max_length);
    check_close(jnum(f, "layers"), fl.layers, "layers");
    check_close(jnum(f, "attention"), fl.attention, "attention");
    check_close(jnum(f, "routers"), fl.routers, "routers");
    check_close(jnum(f, "head"), fl.head, "head");
    check_close(jnum(f, "total"), fl.total, "total");
    check_close(jnum(f, "kaplan"), fl.kaplan, "kaplan");
    check_close(jnum(f, "paper"), fl.paper, "paper");
    json_t *act = json_object_get(f, "active");
    assert_int_equal(json_array_size(act), 3);
    for (size_t r = 0; r < 3; r++) assert_int_equal(json_integer_value(json_array_get(act, r)), fl.active[r]);
    json_t *train = json_object_get(cost, "train");
    check_close(jnum(train, "tokens_per_step"),
                (double)c.train.batch_size * c.train.grad_accum * c.train.max_length, "tokens_per_step");
    check_close(jnum(train, "step_flops_paper"), mor_cost_step_flops(&c, MOR_FLOPS_PAPER), "step paper");
    check_close(jnum(train, "step_flops_computed"), mor_cost_step_flops(&c, MOR_FLOPS_COMPUTED),
                "step computed");
    assert_string_equal(json_string_value(json_object_get(train, "flops_accounting")), "paper");
    assert_true(json_is_null(json_object_get(train, "budget_steps")));
    json_t *strat = json_object_get(cost, "strategies");
    int found = 0;
    for (size_t i = 0; i < json_array_size(strat); i++) {
        json_t *s = json_array_get(strat, i);
        if (!json_is_true(json_object_get(s, "current"))) continue;
        found++;
        assert_string_equal(json_string_value(json_object_get(s, "strategy")), "share");
        check_close(jnum(s, "kv_bytes_per_token_bf16"), kv.bytes_per_token, "kv bf16");
        check_close(jnum(s, "kv_bytes_per_token_f32"), 2 * kv.bytes_per_token, "kv f32");
        check_close(jnum(s, "flops_per_token"), fl.total, "strategy flops");
    }
    assert_int_equal(found, 1);
    json_decref(o);
    free(out);

    /* --seq-len moves the averaging length; text names the config */
    mor_cost_flops(&c, 512, &fl);
    snprintf(cmd, sizeof cmd, "%s --config %s --seq-len 512 --json", tool("mor-inspect"), cfg_path);
    assert_int_equal(run_cmd(cmd, &out, NULL), 0);
    o = parse_json(out);
    check_close(jnum(json_object_get(json_object_get(o, "cost"), "flops"), "paper"), fl.paper, "paper 512");
    json_decref(o);
    free(out);
    snprintf(cmd, sizeof cmd, "%s --config %s", tool("mor-inspect"), cfg_path);
    assert_int_equal(run_cmd(cmd, &out, NULL), 0);
    char want[160];
    snprintf(want, sizeof want, "config: %s\n", cfg_path);
    assert_non_null(strstr(out, want));
    snprintf(want, sizeof want, "unique (stored): %lld\n", (long long)pc.unique);
    assert_non_null(strstr(out, want));
    assert_non_null(strstr(out, "paper accounting: "));
    assert_non_null(strstr(out, "* share "));
    free(out);

    /* the routing section names what the aux-loss coefficient weighs */
    const char *micro = tmp_path("micro-config.yaml");
    char *text = read_all(cfg_path, NULL), *key = strstr(text, "aux_loss_scale: step");
    assert_non_null(key);
    FILE *mf = fopen(micro, "w");
    assert_non_null(mf);
    fprintf(mf, "%.*saux_loss_scale: micro_batch%s", (int)(key - text), text, key + strlen("aux_loss_scale: step"));
    fclose(mf);
    free(text);
    snprintf(cmd, sizeof cmd, "%s --config %s --json", tool("mor-inspect"), micro);
    assert_int_equal(run_cmd(cmd, &out, NULL), 0);
    o = parse_json(out);
    assert_string_equal(json_string_value(json_object_get(json_object_get(o, "routing"), "aux_loss_scale")),
                        "micro_batch");
    json_decref(o);
    free(out);
    snprintf(cmd, sizeof cmd, "%s --config %s", tool("mor-inspect"), micro);
    assert_int_equal(run_cmd(cmd, &out, NULL), 0);
    assert_non_null(strstr(out, "(coeff 0.016 per micro_batch)"));
    free(out);

    /* a config with a FLOP budget: the steps it buys */
    const char *budget = tmp_path("budget-config.yaml");
    char *yaml = read_all(cfg_path, NULL), *at = strstr(yaml, "\ntrain:\n");
    assert_non_null(at);
    FILE *fp = fopen(budget, "w");
    assert_non_null(fp);
    fprintf(fp, "%.*s\ntrain:\n  flops_budget: 16.5e18\n  flops_accounting: computed\n%s", (int)(at - yaml),
            yaml, at + strlen("\ntrain:\n"));
    fclose(fp);
    free(yaml);
    snprintf(cmd, sizeof cmd, "%s --config %s --json", tool("mor-inspect"), budget);
    assert_int_equal(run_cmd(cmd, &out, NULL), 0);
    o = parse_json(out);
    train = json_object_get(json_object_get(o, "cost"), "train");
    assert_string_equal(json_string_value(json_object_get(train, "flops_accounting")), "computed");
    assert_int_equal(jint(train, "budget_steps"), mor_cost_budget_steps(&c, 16.5e18, MOR_FLOPS_COMPUTED));
    json_decref(o);
    free(out);

    /* a bad config is bad input (2), naming the file; a model and --config is usage (1) */
    const char *bad = tmp_path("bad-config.yaml");
    write_file(bad, "model:\n  hidden_size: lots\n");
    snprintf(cmd, sizeof cmd, "%s --config %s", tool("mor-inspect"), bad);
    assert_int_equal(run_cmd(cmd, &out, &err), 2);
    assert_string_equal(out, "");
    assert_non_null(strstr(err, "hidden_size"));
    free(out);
    free(err);
    snprintf(cmd, sizeof cmd, "%s %s --config %s", tool("mor-inspect"), mor_path, cfg_path);
    assert_int_equal(run_cmd(cmd, NULL, NULL), 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_depths_histogram), cmocka_unit_test(test_depths_top),
        cmocka_unit_test(test_depths_color),     cmocka_unit_test(test_depths_html),
        cmocka_unit_test(test_depths_html_path), cmocka_unit_test(test_depths_empty_texts),
        cmocka_unit_test(test_depths_header_escapes), cmocka_unit_test(test_depths_plurals),
        cmocka_unit_test(test_depths_bad),
        cmocka_unit_test(test_generate_trace),
        cmocka_unit_test(test_generate_routing_flags), cmocka_unit_test(test_inspect_mor),
        cmocka_unit_test(test_inspect_config),
    };
    return cmocka_run_group_tests_name("inspect", tests, setup, NULL);
}

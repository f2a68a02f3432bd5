/* eval_convert.c - `mor-eval convert-task FORMAT IN.jsonl`: the published
 * JSONL of HellaSwag, PIQA, ARC, Winogrande and LAMBADA into mor-eval's task
 * format, building the prompts exactly as lm-evaluation-harness's task
 * definitions do (hellaswag/utils.py, piqa.yaml, arc_easy.yaml,
 * winogrande/preprocess_winogrande.py, lambada_openai.yaml), with the " "
 * target delimiter written into each choice. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "eval_common.h"
#include "mor_train.h"

static int is_ws(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Python's str.strip() for ASCII whitespace: s[*b..*e). */
static void strip_span(const char *s, size_t *b, size_t *e) {
    *b = 0;
    *e = strlen(s);
    while (*b < *e && is_ws(s[*b])) (*b)++;
    while (*e > *b && is_ws(s[*e - 1])) (*e)--;
}

/* Python's s.replace(from, to): non-overlapping, left to right. */
static void replace_all(mor_strbuf *out, const char *s, const char *from, const char *to) {
    size_t fl = strlen(from);
    out->len = 0;
    mor_sb_add(out, "", 0);
    for (const char *p = s;;) {
        const char *hit = strstr(p, from);
        if (!hit) {
            mor_sb_cat(out, p);
            return;
        }
        mor_sb_add(out, p, (size_t)(hit - p));
        mor_sb_cat(out, to);
        p = hit + fl;
    }
}

/* lm-eval hellaswag preprocess(): strip, " [title]" -> ". ", drop every
 * re.sub("\\[.*?\\]") match (a bracket pair with no newline inside, the
 * shortest), then "  " -> " " once over the string. */
static char *hs_preprocess(const char *text) {
    size_t b, e;
    strip_span(text, &b, &e);
    char *t = malloc(e - b + 1);
    if (!t) return NULL;
    memcpy(t, text + b, e - b);
    t[e - b] = 0;
    mor_strbuf a = {0}, c = {0}, d = {0};
    replace_all(&a, t, " [title]", ". ");
    free(t);
    if (a.oom) return NULL;
    mor_sb_add(&c, "", 0);
    for (size_t i = 0; i < a.len;) {
        if (a.s[i] == '[') {
            size_t j = i + 1;
            while (j < a.len && a.s[j] != ']' && a.s[j] != '\n') j++;
            if (j < a.len && a.s[j] == ']') {
                i = j + 1;
                continue;
            }
        }
        mor_sb_add(&c, a.s + i, 1);
        i++;
    }
    free(a.s);
    if (!c.oom) replace_all(&d, c.s, "  ", " ");
    free(c.s);
    if (d.oom) {
        free(d.s);
        return NULL;
    }
    return d.s;
}

/* Python's str.capitalize() on ASCII letters: the first character upper
 * case, all others lower case. Other bytes are left as they are. */
static char *capitalize(const char *s) {
    char *d = strdup(s);
    if (!d) return NULL;
    for (size_t i = 0; d[i]; i++) {
        unsigned char ch = (unsigned char)d[i];
        if (ch < 0x80) d[i] = (char)(i == 0 ? toupper(ch) : tolower(ch));
    }
    return d;
}

static const char *get_str(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* An integer field that may also be written as a decimal string ("3"). */
static int get_int(json_t *o, const char *key, long *out) {
    json_t *v = json_object_get(o, key);
    if (json_is_integer(v)) {
        *out = (long)json_integer_value(v);
        return 0;
    }
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;
    char *end;
    if (!s || !*s) return -1;
    *out = strtol(s, &end, 10);
    return *end ? -1 : 0;
}

#define BAD(...) (eval_input_error(__VA_ARGS__), (json_t *)NULL)

static json_t *choice_with_space(const char *s) {
    mor_strbuf b = {0};
    mor_sb_cat(&b, " ");
    mor_sb_cat(&b, s);
    json_t *j = b.oom ? NULL : json_string(b.s);
    free(b.s);
    return j;
}

static json_t *mc_item(const char *context, json_t *choices, long gold) {
    json_t *j = json_object();
    json_object_set_new(j, "context", json_string(context));
    json_object_set_new(j, "choices", choices);
    json_object_set_new(j, "gold", json_integer(gold));
    return j;
}

static json_t *conv_hellaswag(json_t *o, const char *path, int line) {
    const char *a = get_str(o, "ctx_a"), *b = get_str(o, "ctx_b"), *act = get_str(o, "activity_label");
    json_t *endings = json_object_get(o, "endings");
    long gold;
    if (!a || !b || !act || !json_is_array(endings) || json_array_size(endings) == 0)
        return BAD("%s:%d: hellaswag needs strings ctx_a, ctx_b, activity_label and an array endings",
                   path, line);
    if (get_int(o, "label", &gold) || gold < 0 || gold >= (long)json_array_size(endings))
        return BAD("%s:%d: hellaswag \"label\" is missing or out of range", path, line);
    char *cap = capitalize(b);
    mor_strbuf q = {0};
    mor_sb_cat(&q, act);
    mor_sb_cat(&q, ": ");
    mor_sb_cat(&q, a);
    mor_sb_cat(&q, " ");
    mor_sb_cat(&q, cap ? cap : "");
    free(cap);
    char *query = q.oom ? NULL : hs_preprocess(q.s);
    free(q.s);
    json_t *choices = json_array();
    for (size_t i = 0; i < json_array_size(endings); i++) {
        json_t *e = json_array_get(endings, i);
        if (!json_is_string(e)) {
            free(query);
            json_decref(choices);
            return BAD("%s:%d: hellaswag endings[%zu] is not a string", path, line, i);
        }
        char *p = hs_preprocess(json_string_value(e));
        json_array_append_new(choices, choice_with_space(p ? p : ""));
        free(p);
    }
    json_t *j = mc_item(query ? query : "", choices, gold);
    free(query);
    return j;
}

static json_t *question_item(const char *question, json_t *choices, long gold) {
    mor_strbuf c = {0};
    mor_sb_cat(&c, "Question: ");
    mor_sb_cat(&c, question);
    mor_sb_cat(&c, "\nAnswer:");
    json_t *j = mc_item(c.oom ? "" : c.s, choices, gold);
    free(c.s);
    return j;
}

static json_t *conv_piqa(json_t *o, const char *path, int line, long label) {
    const char *goal = get_str(o, "goal"), *s1 = get_str(o, "sol1"), *s2 = get_str(o, "sol2");
    if (!goal || !s1 || !s2) return BAD("%s:%d: piqa needs strings goal, sol1 and sol2", path, line);
    long gold = label;
    if (gold < 0 && get_int(o, "label", &gold))
        return BAD("%s:%d: piqa \"label\" is missing (give --labels FILE for the original split)", path,
                   line);
    if (gold != 0 && gold != 1) return BAD("%s:%d: piqa label %ld is not 0 or 1", path, line, gold);
    json_t *choices = json_array();
    json_array_append_new(choices, choice_with_space(s1));
    json_array_append_new(choices, choice_with_space(s2));
    return question_item(goal, choices, gold);
}

/* Hugging Face ai2_arc rows ({"question": Q, "choices": {"text": [...],
 * "label": [...]}, "answerKey": K}) or the original ARC JSONL ({"question":
 * {"stem": Q, "choices": [{"text", "label"}...]}, "answerKey": K}). */
static json_t *conv_arc(json_t *o, const char *path, int line) {
    json_t *q = json_object_get(o, "question"), *ch = json_object_get(o, "choices");
    const char *key = get_str(o, "answerKey"), *stem = NULL;
    json_t *texts = json_array(), *labels = json_array();
    if (json_is_object(q)) { /* original layout */
        stem = get_str(q, "stem");
        json_t *list = json_object_get(q, "choices");
        for (size_t i = 0; json_is_array(list) && i < json_array_size(list); i++) {
            json_t *c = json_array_get(list, i);
            json_array_append(texts, json_object_get(c, "text"));
            json_array_append(labels, json_object_get(c, "label"));
        }
    } else if (json_is_string(q) && json_is_object(ch)) {
        stem = json_string_value(q);
        json_array_extend(texts, json_object_get(ch, "text"));
        json_array_extend(labels, json_object_get(ch, "label"));
    }
    size_t n = json_array_size(texts);
    json_t *res = NULL;
    long gold = -1;
    if (!stem || !key || n == 0 || json_array_size(labels) != n) {
        res = BAD("%s:%d: arc needs \"question\", \"choices\" (texts and labels) and \"answerKey\"",
                  path, line);
        goto out;
    }
    json_t *choices = json_array();
    for (size_t i = 0; i < n; i++) {
        const char *t = json_string_value(json_array_get(texts, i));
        const char *l = json_string_value(json_array_get(labels, i));
        if (!t || !l) {
            json_decref(choices);
            res = BAD("%s:%d: arc choice %zu has no string text and label", path, line, i);
            goto out;
        }
        if (!strcmp(l, key)) gold = (long)i;
        json_array_append_new(choices, choice_with_space(t));
    }
    if (gold < 0) {
        json_decref(choices);
        res = BAD("%s:%d: arc answerKey \"%s\" is not among the choice labels", path, line, key);
        goto out;
    }
    res = question_item(stem, choices, gold);
out:
    json_decref(texts);
    json_decref(labels);
    return res;
}

/* lm-eval's partial scoring: each option fills the blank and ends its own
 * context; the shared continuation is the rest of the sentence. */
static json_t *conv_winogrande(json_t *o, const char *path, int line) {
    const char *s = get_str(o, "sentence"), *o1 = get_str(o, "option1"), *o2 = get_str(o, "option2");
    long ans;
    if (!s || !o1 || !o2)
        return BAD("%s:%d: winogrande needs sentence, option1 and option2", path, line);
    if (get_int(o, "answer", &ans) || (ans != 1 && ans != 2))
        return BAD("%s:%d: winogrande \"answer\" must be \"1\" or \"2\" (the test split is unlabeled)",
                   path, line);
    const char *blank = strchr(s, '_');
    if (!blank) return BAD("%s:%d: winogrande sentence has no '_' blank", path, line);
    size_t pre = (size_t)(blank - s), b, e;
    strip_span(blank + 1, &b, &e);
    mor_strbuf c1 = {0}, c2 = {0}, k = {0};
    mor_sb_add(&c1, s, pre);
    mor_sb_cat(&c1, o1);
    mor_sb_add(&c2, s, pre);
    mor_sb_cat(&c2, o2);
    mor_sb_cat(&k, " ");
    mor_sb_add(&k, blank + 1 + b, e - b);
    json_t *j = NULL;
    if (!c1.oom && !c2.oom && !k.oom) {
        j = json_object();
        json_t *ctxs = json_array();
        json_array_append_new(ctxs, json_string(c1.s));
        json_array_append_new(ctxs, json_string(c2.s));
        json_object_set_new(j, "contexts", ctxs);
        json_object_set_new(j, "continuation", json_string(k.s));
        json_object_set_new(j, "gold", json_integer(ans - 1));
    }
    free(c1.s);
    free(c2.s);
    free(k.s);
    return j;
}

static json_t *conv_lambada(json_t *o, const char *path, int line) {
    const char *t = get_str(o, "text");
    if (!t) return BAD("%s:%d: lambada needs a string \"text\"", path, line);
    const char *sp = strrchr(t, ' ');
    if (!sp || sp == t || !sp[1])
        return BAD("%s:%d: lambada text has no last word after a space", path, line);
    char *ctx = strndup(t, (size_t)(sp - t));
    json_t *j = json_object();
    json_object_set_new(j, "context", json_string(ctx ? ctx : ""));
    json_object_set_new(j, "target", json_string(sp));
    free(ctx);
    return j;
}

static const char *FORMATS[] = {"hellaswag", "piqa", "arc", "winogrande", "lambada"};

int eval_cmd_convert(const eval_opts *o) {
    const char *fmt = o->files[0], *path = o->files[1];
    int f = -1;
    for (int i = 0; i < 5; i++)
        if (!strcmp(fmt, FORMATS[i])) f = i;
    if (f < 0)
        return cli_usage_error("convert-task: unknown format '%s' (hellaswag, piqa, arc, winogrande, "
                               "lambada)",
                               fmt);
    if (o->labels && f != 1) return cli_usage_error("--labels applies to piqa only");
    char *buf = NULL, *lbuf = NULL, **lines = NULL, **labels = NULL;
    size_t len, nl = 0, nlab = 0, used = 0, lablen;
    int rc = cli_read_input(path, &buf, &len);
    if (!rc && o->labels) rc = cli_read_input(o->labels, &lbuf, &lablen);
    if (!rc && (eval_split_lines(buf, len, &lines, &nl) ||
                (lbuf && eval_split_lines(lbuf, lablen, &labels, &nlab))))
        rc = cli_usage_error("out of memory");
    long written = 0;
    for (size_t i = 0; i < nl && !rc && (!o->limit || written < o->limit); i++) {
        const char *s = lines[i];
        while (is_ws(*s)) s++;
        if (!*s) continue;
        int line = (int)i + 1;
        json_error_t je;
        json_t *in = json_loads(lines[i], 0, &je), *out = NULL;
        if (!in || !json_is_object(in)) {
            rc = in ? eval_input_error("%s:%d: expected a JSON object", path, line)
                    : eval_input_error("%s:%d: malformed JSON at column %d: %s", path, line, je.column,
                                       je.text);
            json_decref(in);
            break;
        }
        long label = -1;
        if (labels) {
            char *end;
            if (used >= nlab) {
                rc = eval_input_error("%s: fewer labels than items (%zu)", o->labels, nlab);
            } else {
                label = strtol(labels[used], &end, 10);
                if (end == labels[used] || *end)
                    rc = eval_input_error("%s:%zu: '%s' is not 0 or 1", o->labels, used + 1,
                                          labels[used]);
                used++;
            }
        }
        if (!rc) {
            switch (f) {
            case 0: out = conv_hellaswag(in, path, line); break;
            case 1: out = conv_piqa(in, path, line, label); break;
            case 2: out = conv_arc(in, path, line); break;
            case 3: out = conv_winogrande(in, path, line); break;
            default: out = conv_lambada(in, path, line); break;
            }
            if (!out) rc = EXIT_INPUT;
        }
        json_decref(in);
        if (out) {
            eval_json_print(stdout, out);
            written++;
        }
    }
    if (!rc) cli_log("wrote %ld %s items", written, fmt);
    free(lines);
    free(labels);
    free(buf);
    free(lbuf);
    return rc;
}

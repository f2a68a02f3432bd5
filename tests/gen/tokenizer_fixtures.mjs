// tokenizer_fixtures.mjs - reference token ids for tests/test_tokenizer.c.
//
// Encodes sample texts with the Hugging Face tokenizers.js library and writes
// one JSON line per text to tests/fixtures/tokenizer/<name>.jsonl:
//   {"text": ..., "ids": [...] (no special tokens),
//    "ids_special": [...] (post-processor applied; edge cases only),
//    "decoded": ... (decode of ids_special or ids, special tokens skipped)}
//
// Tokenizers: GPT-2 and stories260K (Llama-2 byte fallback) from tests/data,
// plus the variants of tests/fixtures/tokenizer/variants.json (a base
// tokenizer.json with some fields replaced; the C test builds the same ones).
//
// Run from the repository root:
//   (cd tests/gen && npm install) && node tests/gen/tokenizer_fixtures.mjs
// (CORPORA=dir overrides the corpus directory; see below.)
import fs from "fs";
import { Tokenizer } from "@huggingface/tokenizers";

const OUT = "tests/fixtures/tokenizer";
// The committed fixtures sample the full corpora; tests/data/corpora holds
// only their first 2000 lines, so sampling it gives other texts.
// CORPORA=dir names the directory of the full kjv_bible.txt and jargon.txt.
const CORPORA = process.env.CORPORA ?? "tests/data/corpora";

// Every step-th line of a corpus (n lines), then n_chunks chunks of 4
// consecutive lines joined with newlines (blank lines and indents kept).
function sample(path, n, n_chunks) {
  const lines = fs.readFileSync(path, "utf8").split("\n");
  const out = [];
  const step = Math.floor(lines.length / n);
  for (let i = 0; i < n; i++) out.push(lines[i * step + 7]);
  const cstep = Math.floor(lines.length / n_chunks);
  for (let i = 0; i < n_chunks; i++) {
    const at = i * cstep + 13;
    out.push(lines.slice(at, at + 4).join("\n"));
  }
  return out;
}

const EDGE = [
  "", " ", "  ", "\t", "\n", "\n\n", " \n ", "hello", " hello", "hello ", "  hello  world  ",
  "Once upon a time, there was a little girl named Lily.",
  "Hello\tworld\n\nnew paragraph\r\nwindows line\r\n", "multiple     spaces   here",
  "tabs\t\tand\ttabs", "trailing spaces   ", "   leading spaces", "line1\nline2\n",
  "café résumé naïve über Straße", "ÀÉÎÕÜ àéîõü ñ ç", "Ελληνικά кириллица العربية עברית",
  "中文字符测试", "日本語のテキスト", "emoji 😀🎉 👍🏽 family 👨‍👩‍👧", "😀",
  "12345 678901234 3.14159 1,000,000 2024-01-01", "mixed123numbers456", "Ⅻ ½ ² ٣",
  "<s>", "</s>", "<unk>", "<s>hello</s>", "a <s> b", " <s> ", "<s><s>",
  "<|endoftext|>", "text<|endoftext|>more", " <|endoftext|> ", "<|endoftext|><|endoftext|>",
  "don't can't won't I'm you're we've they'll he'd", "DON'T SHOUTING'S THEY'LL",
  "It's 'quoted' and \"double\" (parens) [brackets] {braces}",
  "a  <|mask|>  b", "<|mask|>", "x<|mask|>y", "x[[tool]]y", "[[tool]] [[tool]]",
  "\u00a0nbsp\u00a0", "zero\u200bwidth", "a\u2581b \u2581\u2581", "<0x41>", "a\u0000b",
  "ﬁ ligature", "http://example.com/path?q=1&r=2#frag", "email@example.com",
  "#include <stdio.h>\nint main(void) { return 0; }\n",
  "x".repeat(300), "ab".repeat(100) + " " + "zq".repeat(50),
  "!!!???...,,,;;;", "   \n\n   \t\t  end",
];

const texts = [
  ...EDGE.map((t) => ({ text: t, edge: true })),
  ...sample(`${CORPORA}/kjv_bible.txt`, 250, 30).map((t) => ({ text: t, edge: false })),
  ...sample(`${CORPORA}/jargon.txt`, 250, 30).map((t) => ({ text: t, edge: false })),
];

function load(dir) {
  const j = JSON.parse(fs.readFileSync(`${dir}/tokenizer.json`, "utf8"));
  const c = JSON.parse(fs.readFileSync(`${dir}/tokenizer_config.json`, "utf8"));
  return [j, c];
}

// Applies a variant's "set" entries: "a.b" replaces a nested field,
// "key+" appends to a list.
function apply(json, set) {
  for (const [key, value] of Object.entries(set)) {
    if (key.endsWith("+")) {
      json[key.slice(0, -1)].push(...structuredClone(value));
      continue;
    }
    const path = key.split(".");
    let o = json;
    for (const p of path.slice(0, -1)) o = o[p];
    o[path.at(-1)] = structuredClone(value);
  }
  return json;
}

const tokenizers = {
  gpt2: load("tests/data/gpt2"),
  stories260K: load("tests/data/stories260K-hf"),
};
const variants = JSON.parse(fs.readFileSync(`${OUT}/variants.json`, "utf8"));
for (const [name, v] of Object.entries(variants)) {
  const [j, c] = load(v.base);
  tokenizers[name] = [apply(j, v.set), v.config ?? c];
}

for (const [name, [json, config]] of Object.entries(tokenizers)) {
  const tok = new Tokenizer(json, { ...config, clean_up_tokenization_spaces: false });
  const lines = [];
  let n_ids = 0;
  for (const { text, edge } of texts) {
    // tokenizers.js's Digits splits only 0-9; HF (Rust) splits every \p{N}.
    if (json.pre_tokenizer?.pretokenizers?.some((p) => p.type === "Digits") &&
        /[^\P{N}0-9]/u.test(text)) continue;
    const ids = tok.encode(text, { add_special_tokens: false }).ids;
    const rec = { text, ids };
    let dec_ids = ids;
    if (edge) {
      rec.ids_special = tok.encode(text, { add_special_tokens: true }).ids;
      dec_ids = rec.ids_special;
    }
    rec.decoded = dec_ids.length ? tok.decode(dec_ids, { skip_special_tokens: true }) : "";
    n_ids += ids.length;
    lines.push(JSON.stringify(rec));
  }
  fs.writeFileSync(`${OUT}/${name}.jsonl`, lines.join("\n") + "\n");
  console.log(`${name}: ${texts.length} texts, ${n_ids} ids`);
}

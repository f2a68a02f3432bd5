// tokenizer_norm_fixtures.mjs - reference ids for tests/test_tokenizer_norm.c:
// the Unicode normalizers (NFC, NFD, NFKC, NFKD, StripAccents, Lowercase).
//
// Builds small tokenizer.json files and writes, under tests/fixtures/tokenizer_norm/:
//   <name>.json   the tokenizer (read by the C test as is)
//   texts.json    the texts, a JSON array of strings
//   <name>.jsonl  one line per text: {"ids": [...] (no special tokens),
//                 "norm": normalizer output (omitted when equal to the text),
//                 "dec": decode(ids) (omitted when equal to "norm")}
//
// Tokenizers:
//   bl_*  byte-level BPE: GPT-2 cut to its first MERGES merges (GPT-2 gives
//         merge k the id 256 + k, so the cut is a consistent tokenizer), with
//         one normalizer each; bl_added has NFKC + Lowercase and added
//         tokens (normalized and raw).
//   sp_*  stories260K (Llama-2 SentencePiece BPE, byte fallback), a Unicode
//         normalizer before its Prepend/Replace.
//
// Lowercase: HF (Rust) lowercases char by char (char::to_lowercase), so a
// word-final capital sigma becomes σ, while tokenizers.js calls
// String.toLowerCase, which applies the Final_Sigma rule (ς). mor follows
// HF; the Lowercase normalizer of tokenizers.js is patched here to map char
// by char too, and the texts where the two differ are counted.
//
// Unicode versions: tokenizers.js normalizes with node's ICU; utf8proc 2.8
// (mor) has Unicode 15.0. They agree on every code point assigned in 15.0
// (single-character NFC/NFD/NFKC/NFKD, Mark category and lowercase checked
// over all of them when this was written), so the texts stay within 15.0.
//
// Run from the repository root:
//   (cd tests/gen && npm install) && node tests/gen/tokenizer_norm_fixtures.mjs
// with CORPORA=dir naming the directory of the full corpora (see below).
import fs from "fs";
import { Tokenizer, LowercaseNormalizer } from "@huggingface/tokenizers";

const OUT = "tests/fixtures/tokenizer_norm";
// The full corpora, kjv_bible.txt and jargon.txt (tests/data/corpora holds
// their first 2000 lines, which lack the pronunciation guides with ´ · and the
// accented names): CORPORA=dir names their directory.
const CORPORA = process.env.CORPORA;
if (!CORPORA) {
  console.error("tokenizer_norm_fixtures: set CORPORA to the directory of the full kjv_bible.txt " +
                "and jargon.txt (tests/data/corpora has only their first 2000 lines)");
  process.exit(1);
}
const MERGES = 300;

const lowerJs = LowercaseNormalizer.prototype.normalize;
const lowerRust = (text) => Array.from(text, (c) => c.toLowerCase()).join("");

// ---------------------------------------------------------------------------
// Texts

// Hand-written texts (the order is the fixture's; texts.json keeps it).
const EDGE = [
  "", " ", "hello world",
  // precomposed vs decomposed accents
  "café", "cafe\u0301", "\u00e9 vs e\u0301 vs E\u0301 vs \u00c9",
  "Cre\u0300me bru\u0302le\u0301e, na\u0131\u0308ve, Zu\u0308rich, Ma\u0303e",
  // marks out of canonical order (reordering), two marks on one letter
  "a\u0323\u0301 a\u0301\u0323 \u1ea5\u0323 q\u0307\u0323 o\u031b\u0301",
  // Hangul: conjoining jamo compose, syllables decompose
  "\u1100\u1161\u11a8 \u1112\u1161\u11ab\u1100\u1173\u11af " +
    "\ud55c\uad6d\uc5b4 \uac00\u11a8",
  // compatibility: ligatures, full-width, half-width kana, voicing marks
  "\ufb01nancial \ufb02ow e\ufb03cient \ufb00",
  "\uff21\uff22\uff23 \uff11\uff12\uff13 \uff08\uff01\uff09",
  "\uff76\uff9e\uff8e\uff9f\uff9d \u30ab\u3099 \u304b\u309a",
  // super/subscripts, Roman numerals, circled digits, fractions
  "x\u00b2 + y\u00b3 = z\u2074, H\u2082O, m\u00b2",
  "\u2167 \u216b \u2170\u2171 \u2460\u2461 \u00bd \u00bc \u2155",
  // singletons (Ohm, Angstrom, Kelvin), micro, long s
  "\u2126 \u212b \u212a \u00b5 \u03bc \u017f \u1e9b\u0323",
  "\u00c5ngstr\u00f6m A\u030angstro\u0308m",
  "\u2122 \u00a9 \u2120 \u3392 \u337b \u32a4 \ufdfa",
  // Greek: tonos, polytonic, final sigma (Lowercase)
  "\u0399\u03b1\u03c4\u03c1\u03cc\u03c2 \u1f08\u03c1\u03c7\u1f74 \u03ac \u03b1\u0301 \u0390 \u1fd3",
  "\u039f\u0394\u039f\u03a3 \u039f\u0394\u039f\u03a3. \u03a3\u039f\u03a6\u0399\u0391 \u03a3 " +
    "\u039c\u0391\u03a3\u039f\u03a3'\u0391",
  // Vietnamese, precomposed and decomposed
  "Ti\u1ebfng Vi\u1ec7t c\u00f3 d\u1ea5u: Ho\u00e0ng, Ph\u1edf, \u0110\u1eb7ng",
  "Tie\u0302\u0301ng Vie\u0323\u0302t",
  // Devanagari (nukta, composition exclusion U+0958, Mc vowel signs), Thai,
  // Hebrew and Arabic points, Cyrillic
  "\u0939\u093f\u0928\u094d\u0926\u0940 \u0915\u093c \u0958 \u0921\u093c\u093e",
  "\u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22 \u0e19\u0e49\u0e33",
  "\u05e9\u05b8\u05c1\u05dc\u05d5\u05b9\u05dd " +
    "\u0645\u064e\u0631\u0652\u062d\u064e\u0628\u064b\u0627",
  "\u0422\u0435\u0441\u0442 \u0439 \u0438\u0306 \u0401\u0436 \u0415\u0308",
  // emoji: skin tone, ZWJ family, VS16 (Mn), keycap (Me)
  "emoji \ud83d\ude00\ud83c\udf89 \ud83d\udc4d\ud83c\udffd " +
    "\ud83d\udc68\u200d\ud83d\udc69\u200d\ud83d\udc67 \u2764\ufe0f 1\ufe0f\u20e3",
  // case: dotted I, sharp s, titlecase digraphs, cased symbols
  "\u0130stanbul \u0130I\u0131i D\u0130YARBAKIR", "STRASSE Stra\u00dfe \u1e9e \u01c5 \u01c4 \u01c6",
  "\u2160 \u24b6\u24d0 \ud83c\udd30 \u00aa\u00ba", "MIXED Case WITH \u00c0\u00c9\u00ce\u00d5\u00dc",
  // spaces, format characters, NUL, spacing accents
  "\u00a0nbsp\u00a0 \u2003em\u3000ideo", "zero\u200bwidth\u200d", "a\u0000b",
  "\u00b4 \u00a8 \u02dc \u00af", "\u2026 \u2025 \u2033 \u2460",
  // Greek singletons, angle brackets, math letters, Tibetan, dot order
  "\u0344 \u0340\u0341 \u0374 \u037e \u0387", "\u2329 \u232a \u3008\u3009",
  "\ud835\udc00\ud835\udc1a \ud835\udfce \u210c \u2102", "\u0f73 \u0f75 \u0f81",
  "\u1e0a\u0323 \u1e0c\u0307",
  // added tokens (bl_added)
  "<|endoftext|>", "x<|endoftext|>\u00e9",
  "\ufb01x FIX f\u0131x [ID] [Id] [id] Foo FOO foo \u1e9e\u00c0",
  "\u00e9".repeat(40) + " " + "e\u0301".repeat(40),
];

// Short lines of jargon.txt with non-ASCII text (curly quotes, NBSP, µ, ´,
// 〈 〉, ™, é, ö ...), then plain KJV lines.
function corpusLines() {
  const jargon = fs.readFileSync(`${CORPORA}/jargon.txt`, "utf8").split("\n");
  const want = jargon.filter((l) => /[^\x00-\x7f]/.test(l) && !/[\u2500-\u257f]/.test(l) &&
    l.length > 12 && l.length < 90);
  const out = [];
  const seen = new Set();
  // Every distinct non-ASCII character once (its first line), then a spread.
  for (const l of want)
    for (const c of l)
      if (c > "\x7f" && !seen.has(c)) {
        seen.add(c);
        if (!out.includes(l)) out.push(l);
      }
  const step = Math.floor(want.length / 16);
  for (let i = 0; i < 16; i++) if (!out.includes(want[i * step])) out.push(want[i * step]);
  const kjv = fs.readFileSync(`${CORPORA}/kjv_bible.txt`, "utf8").split("\n")
    .filter((l) => l.length > 20 && l.length < 80);
  for (let i = 0; i < 6; i++) out.push(kjv[Math.floor(i * kjv.length / 6) + 3]);
  return out;
}

const texts = [...EDGE, ...corpusLines()];

// ---------------------------------------------------------------------------
// Tokenizers

function readJson(path) {
  return JSON.parse(fs.readFileSync(path, "utf8"));
}

// GPT-2 with its first MERGES merges: ids 0..255 are the bytes, 256 + k the
// result of merge k; <|endoftext|> moves to 256 + MERGES.
function byteLevelBase() {
  const j = readJson("tests/data/gpt2/tokenizer.json");
  const merges = j.model.merges.slice(0, MERGES);
  const vocab = {};
  for (const [s, id] of Object.entries(j.model.vocab)) if (id < 256 + MERGES) vocab[s] = id;
  merges.forEach((m, k) => {
    const [a, b] = m.split(" ");
    if (vocab[a + b] !== 256 + k) throw new Error(`merge ${k} '${m}' is not id ${256 + k}`);
  });
  j.model.vocab = vocab;
  j.model.merges = merges;
  j.added_tokens[0].id = 256 + MERGES;
  return j;
}

const seq = (...normalizers) => ({ type: "Sequence", normalizers });
const NFC = { type: "NFC" }, NFD = { type: "NFD" };
const NFKC = { type: "NFKC" }, NFKD = { type: "NFKD" };
const STRIP_ACCENTS = { type: "StripAccents" }, LOWER = { type: "Lowercase" };
const STRIP = { type: "Strip", strip_left: true, strip_right: true };

function byteLevel(normalizer, extraAdded = []) {
  const j = byteLevelBase();
  j.normalizer = normalizer;
  j.added_tokens.push(...extraAdded);
  return j;
}

// stories260K: the Unicode normalizers go before Prepend("▁") and Replace.
function sentencePiece(...first) {
  const j = readJson("tests/data/stories260K-hf/tokenizer.json");
  j.normalizer = seq(...first, ...j.normalizer.normalizers);
  return j;
}

const added = (id, content, normalized) => ({
  id, content, single_word: false, lstrip: false, rstrip: false, normalized, special: false,
});

const TOKENIZERS = {
  bl_nfc: byteLevel(NFC),
  bl_nfd: byteLevel(NFD),
  bl_nfkc: byteLevel(NFKC),
  bl_nfkd: byteLevel(NFKD),
  bl_strip_accents: byteLevel(STRIP_ACCENTS), // alone: precomposed letters stay
  bl_nfd_strip: byteLevel(seq(NFD, STRIP_ACCENTS)),
  bl_lower: byteLevel(LOWER),
  bl_nfkd_strip_lower: byteLevel(seq(NFKD, STRIP_ACCENTS, LOWER, STRIP)),
  // Normalized added tokens are matched in their normalized form ("ﬁx" ->
  // "fix", "FOO" -> "foo"); a raw one ("[ID]") only as written. (ASCII
  // contents: HF decodes a non-ASCII added token through the ByteLevel
  // decoder up to tokenizers#1996, tokenizers.js as its content.)
  bl_added: byteLevel(seq(NFKC, LOWER),
    [added(256 + MERGES + 1, "\ufb01x", true), added(256 + MERGES + 2, "[ID]", false),
      added(256 + MERGES + 3, "FOO", true)]),
  sp_nfkc: sentencePiece(NFKC),
  sp_nfd_strip_lower: sentencePiece(NFD, STRIP_ACCENTS, LOWER),
};

// ---------------------------------------------------------------------------
// Output

fs.mkdirSync(OUT, { recursive: true });
fs.writeFileSync(`${OUT}/texts.json`,
  "[\n" + texts.map((t) => JSON.stringify(t)).join(",\n") + "\n]\n");
let total = 0;
for (const [name, json] of Object.entries(TOKENIZERS)) {
  fs.writeFileSync(`${OUT}/${name}.json`, JSON.stringify(json));
  const tok = new Tokenizer(json, { clean_up_tokenization_spaces: false });
  const lines = [];
  let n_ids = 0, n_sigma = 0;
  for (const text of texts) {
    LowercaseNormalizer.prototype.normalize = lowerJs;
    const jsIds = tok.encode(text, { add_special_tokens: false }).ids;
    LowercaseNormalizer.prototype.normalize = lowerRust;
    const ids = tok.encode(text, { add_special_tokens: false }).ids;
    if (jsIds.join() !== ids.join()) n_sigma++;
    const rec = { ids };
    // HF's Prepend leaves an empty text empty; tokenizers.js prepends.
    const norm = tok.normalizer && text !== "" ? tok.normalizer(text) : text;
    if (norm !== text) rec.norm = norm;
    const dec = ids.length ? tok.decode(ids, { skip_special_tokens: true }) : "";
    if (dec !== norm) rec.dec = dec;
    n_ids += ids.length;
    lines.push(JSON.stringify(rec));
  }
  fs.writeFileSync(`${OUT}/${name}.jsonl`, lines.join("\n") + "\n");
  total += texts.length;
  console.log(`${name}: ${texts.length} texts, ${n_ids} ids` +
    (n_sigma ? `, ${n_sigma} differ under String.toLowerCase (Final_Sigma)` : ""));
}
console.log(`${total} encodings`);

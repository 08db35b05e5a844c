// Writes a tiktoken encoding (from the npm package) as a Hugging Face
// tokenizer.json, the way transformers' TikTokenConverter does for Llama 3:
// byte-level vocabulary, merges derived from the ranks, the encoding's
// pre-tokenizer regex, ignore_merges. With it, Tuneforge's tokenizer is
// checked against tiktoken on a pattern other than GPT-2's.
//   node tiktoken_to_tokenizer_json.js NODE_MODULES_DIR ENCODING OUT_FILE
const path = require("path");
const fs = require("fs");
const [modules, encoding, out] = process.argv.slice(2);
const spec = JSON.parse(
    fs.readFileSync(path.resolve(modules, "tiktoken/encoders", encoding + ".json"), "utf8"));

// GPT-2's bytes_to_unicode(): printable bytes stand for themselves.
const symbol = [];
let next = 256;
for (let b = 0; b < 256; b++) {
  const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
  symbol.push(String.fromCodePoint(printable ? b : next++));
}
const toSymbols = (bytes) => Array.from(bytes, (b) => symbol[b]).join("");

// bpe_ranks: "! OFFSET tok tok ..." segments, tokens base64, ranks from OFFSET.
const ranks = new Map();  // token bytes as a latin1 string -> rank
const words = spec.bpe_ranks.split(/\s+/);
let rank = 0;
for (let i = 0; i < words.length; i++) {
  if (words[i] === "!") {
    rank = parseInt(words[++i], 10);
    continue;
  }
  if (words[i] === "") continue;
  ranks.set(Buffer.from(words[i], "base64").toString("latin1"), rank++);
}

const vocab = {};
const merges = [];
for (const [token, r] of ranks) {
  vocab[toSymbols(Buffer.from(token, "latin1"))] = r;
  if (token.length === 1) continue;
  const local = [];
  for (let i = 1; i < token.length; i++) {
    const left = token.slice(0, i), right = token.slice(i);
    if (ranks.has(left) && ranks.has(right)) local.push([left, right, r]);
  }
  local.sort((a, b) => ranks.get(a[0]) - ranks.get(b[0]) || ranks.get(a[1]) - ranks.get(b[1]));
  merges.push(...local);
}
merges.sort((a, b) => a[2] - b[2]);

const added = Object.entries(spec.special_tokens).map(([content, id]) => ({
  id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
}));
const tokenizer = {
  version: "1.0",
  added_tokens: added,
  normalizer: null,
  pre_tokenizer: {
    type: "Sequence",
    pretokenizers: [
      {type: "Split", pattern: {Regex: spec.pat_str}, behavior: "Isolated", invert: false},
      {type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false},
    ],
  },
  post_processor: null,
  decoder: {type: "ByteLevel"},
  model: {
    type: "BPE", dropout: null, unk_token: null, fuse_unk: false, byte_fallback: false,
    ignore_merges: true, vocab,
    merges: merges.map(([l, r]) => [toSymbols(Buffer.from(l, "latin1")),
                                    toSymbols(Buffer.from(r, "latin1"))]),
  },
};
fs.writeFileSync(out, JSON.stringify(tokenizer));

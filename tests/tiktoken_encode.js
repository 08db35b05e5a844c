// Encodes a file with one of tiktoken's encodings (encode_ordinary; gpt2
// unless named): the independent oracle for Tuneforge's BPE tokenizer.
// Prints one id per line.
//   node tiktoken_encode.js NODE_MODULES_DIR FILE [ENCODING]
const path = require("path");
const fs = require("fs");
const { get_encoding } = require(path.resolve(process.argv[2], "tiktoken"));
const text = fs.readFileSync(process.argv[3], "utf8");
const enc = get_encoding(process.argv[4] || "gpt2");
process.stdout.write(Array.from(enc.encode_ordinary(text)).join("\n") + "\n");
enc.free();

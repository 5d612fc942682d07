// SPDX-License-Identifier: MIT
// encode.mjs: loads a model directory's tokenizer.json and
// tokenizer_config.json with Hugging Face's JavaScript tokenizer
// implementation (@huggingface/tokenizers, installed by contrib/deps.sh
// --test) and encodes texts, as a merged model's users will.
//
//   node encode.mjs NODE_MODULES MODEL_DIR TEXTS
//
// TEXTS is a JSON list of strings.  A JSON list of their id lists goes
// to stdout, one line; an error (a file that does not load, a text that
// does not encode) goes to stderr with exit status 1.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const [modules, dir, textsPath] = process.argv.slice(2);
const require = createRequire(path.join(modules, "noop.js"));
// require.resolve finds the CommonJS build, whose exports an import
// puts under default.
const mod = await import(
    pathToFileURL(require.resolve("@huggingface/tokenizers")).href);
const Tokenizer = mod.Tokenizer ?? mod.default.Tokenizer;

try {
	const read = (name) =>
	    JSON.parse(fs.readFileSync(path.join(dir, name), "utf8"));
	const tok = new Tokenizer(read("tokenizer.json"),
	    read("tokenizer_config.json"));
	const texts = JSON.parse(fs.readFileSync(textsPath, "utf8"));
	const ids = texts.map((t) => tok.encode(t).ids);
	process.stdout.write(JSON.stringify(ids) + "\n");
} catch (e) {
	process.stderr.write(`encode: ${e.message}\n`);
	process.exit(1);
}

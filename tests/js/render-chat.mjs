// SPDX-License-Identifier: MIT
// render-chat.mjs: renders the chat template of a tokenizer_config.json
// with Hugging Face's JavaScript Jinja implementation (@huggingface/jinja,
// installed by contrib/deps.sh --test), as a model's users will see it.
//
//   node render-chat.mjs NODE_MODULES TOKENIZER_CONFIG CONVERSATION
//
// CONVERSATION is a JSON list of {role, content} messages.  The prompt,
// with add_generation_prompt and the config's bos and eos tokens, goes to
// stdout as it is; an error (no template, a template that does not parse
// or raises) goes to stderr with exit status 1.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const [modules, configPath, convPath] = process.argv.slice(2);
const require = createRequire(path.join(modules, "noop.js"));
const { Template } = await import(
    pathToFileURL(require.resolve("@huggingface/jinja")).href);

// A special token is a string or, in newer configs, {content: ...}.
const token = (t) => (t && typeof t === "object" ? t.content : t) ?? "";

try {
	const config = JSON.parse(fs.readFileSync(configPath, "utf8"));
	const messages = JSON.parse(fs.readFileSync(convPath, "utf8"));
	if (typeof config.chat_template !== "string")
		throw new Error("no chat_template string");
	const prompt = new Template(config.chat_template).render({
		messages,
		add_generation_prompt: true,
		bos_token: token(config.bos_token),
		eos_token: token(config.eos_token),
	});
	process.stdout.write(prompt);
} catch (e) {
	process.stderr.write(`render-chat: ${e.message}\n`);
	process.exit(1);
}

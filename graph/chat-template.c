/* SPDX-License-Identifier: MIT */
/*
 * chat-template.c: the chat templates a config may name (MERGEKIT.md
 * Part B 1.8): mergekit's five built-in names, each a Jinja template of
 * our own that renders the standard prompt format it is named for, and
 * the check mergekit applies to a literal template.
 *
 * Each template is one line without stray white space, so that it renders
 * the same under transformers' Jinja (trim_blocks, lstrip_blocks) and any
 * other implementation.  The prompts, for a system message S, user turns
 * U1 and U2, an assistant turn A and add_generation_prompt:
 *
 *   alpaca   S\n\n### Instruction:\nU1\n\n### Response:\nA\n\n
 *            ### Instruction:\nU2\n\n### Response:\n
 *   chatml   <|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1...
 *            <|im_start|>assistant\n
 *   exaone   [|system|]S[|endofturn|]\n[|user|]U1\n[|assistant|]A
 *            [|endofturn|]\n[|user|]U2\n[|assistant|]
 *   llama3   BOS<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>
 *            ...<|start_header_id|>assistant<|end_header_id|>\n\n
 *   mistral  BOS [INST] S\n\nU1 [/INST] AEOS [INST] U2 [/INST]
 *
 * Where mergekit's own files render otherwise, the standard format wins:
 * its llama3 puts a line break between turns and its exaone indents them
 * (their template files' own white space), and its alpaca drops the blank
 * line before the last "### Response:".  tests/test-chat.c renders every
 * one with Hugging Face's Jinja implementation and compares the prompts.
 */
#include <string.h>

#include "graph-int.h"

static const struct {
	const char *name;
	const char *text;
} chat_templates[] = {
	{ "alpaca",
	    "{% set sys = messages | selectattr('role', 'equalto', 'system') "
	    "| list %}{% if sys %}{{ (sys | last)['content'] | trim + "
	    "'\\n\\n' }}{% endif %}{% for message in messages %}"
	    "{% if message['role'] == 'user' %}{{ '### Instruction:\\n' + "
	    "message['content'] | trim }}{% elif message['role'] == "
	    "'user_context' %}{{ '### Input:\\n' + message['content'] | trim "
	    "}}{% elif message['role'] == 'assistant' %}{{ '### Response:\\n' "
	    "+ message['content'] | trim }}{% endif %}{% if message['role'] "
	    "!= 'system' and not loop.last %}{{ '\\n\\n' }}{% endif %}"
	    "{% endfor %}{% if add_generation_prompt and messages and "
	    "messages[-1]['role'] != 'assistant' %}{{ '\\n\\n### Response:\\n' "
	    "}}{% endif %}" },
	{ "chatml",
	    "{% for message in messages %}{{ '<|im_start|>' + message['role'] "
	    "+ '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}"
	    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
	    "{% endif %}" },
	{ "exaone",
	    "{% for message in messages %}{% if loop.first and "
	    "message['role'] != 'system' %}{{ '[|system|][|endofturn|]\\n' }}"
	    "{% endif %}{{ '[|' + message['role'] + '|]' + "
	    "message['content'] }}{% if message['role'] == 'user' %}"
	    "{{ '\\n' }}{% else %}{{ '[|endofturn|]\\n' }}{% endif %}"
	    "{% endfor %}{% if add_generation_prompt %}{{ '[|assistant|]' }}"
	    "{% endif %}" },
	{ "llama3",
	    "{% for message in messages %}{% if loop.first %}"
	    "{{ bos_token }}{% endif %}{{ '<|start_header_id|>' + "
	    "message['role'] + '<|end_header_id|>\\n\\n' + message['content'] "
	    "| trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt "
	    "%}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
	    "{% endif %}" },
	{ "mistral",
	    "{% if messages and messages[0]['role'] == 'system' %}"
	    "{% set system = "
	    "messages[0]['content'] %}{% set turns = messages[1:] %}"
	    "{% else %}{% set system = '' %}{% set turns = messages %}"
	    "{% endif %}{{ bos_token }}{% for message in turns %}"
	    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
	    "{{ raise_exception('After the optional system message, "
	    "conversation roles must alternate user/assistant/user/...') }}"
	    "{% endif %}{% if message['role'] == 'user' %}{% if loop.first "
	    "and system %}{{ ' [INST] ' + system + '\\n\\n' + "
	    "message['content'] + ' [/INST]' }}{% else %}{{ ' [INST] ' + "
	    "message['content'] + ' [/INST]' }}{% endif %}{% elif "
	    "message['role'] == 'assistant' %}{{ ' ' + message['content'] + "
	    "eos_token }}{% else %}{{ raise_exception('Only user and "
	    "assistant roles are supported, after an optional system "
	    "message') }}{% endif %}{% endfor %}" },
};

#define NTEMPLATES (sizeof chat_templates / sizeof *chat_templates)

/* The built-in template called name, or NULL. */
const char *
chat_template_builtin(const char *name)
{
	size_t i;

	for (i = 0; i < NTEMPLATES; i++)
		if (strcmp(chat_templates[i].name, name) == 0)
			return chat_templates[i].text;
	return NULL;
}

/* The built-in names, for messages and suggestions. */
size_t
chat_template_names(const char **names, size_t max)
{
	size_t i;

	for (i = 0; i < NTEMPLATES && i < max; i++)
		names[i] = chat_templates[i].name;
	return i;
}

/*
 * Whether a config's chat_template value is usable: "auto", a built-in
 * name, or a literal template, which mergekit takes to be one when it is
 * at least 20 characters long and holds a '{'.
 */
bool
chat_template_valid(const char *s)
{
	return strcmp(s, "auto") == 0 || chat_template_builtin(s) != NULL ||
	    (strlen(s) >= 20 && strchr(s, '{') != NULL);
}

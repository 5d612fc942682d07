/* SPDX-License-Identifier: MIT */
/*
 * cmdline.c: splitting a hook's command into words (cmdline.h).
 *
 * A hook is executed without a shell, so that nothing in a job's name,
 * output path or error can be read as shell syntax and no shell
 * startup file runs as the user.  The user still writes the command as
 * one string, as for pueue's callback; quoting is the part of sh that a
 * user needs to pass an argument with blanks.  Whoever wants a shell
 * writes one: --on-done 'sh -c "notify-send \"$MERGED_JOB_STATE\""'.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cmdline.h"
#include "xmalloc.h"

static bool
is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\n';
}

int
cmdline_split(const char *s, char ***out, size_t *n, char **cause)
{
	size_t len = strlen(s), nw = 0, k;
	char **w, *word, quote;
	const char *p = s;

	*out = NULL;
	*n = 0;
	if (len > CMDLINE_MAX_BYTES) {
		*cause = xasprintf("the command is %zu bytes long, more than "
		    "%d", len, CMDLINE_MAX_BYTES);
		return -1;
	}
	w = xcalloc(CMDLINE_MAX_WORDS + 1, sizeof *w);
	for (;;) {
		while (is_blank(*p))
			p++;
		if (*p == '\0')
			break;
		if (nw == CMDLINE_MAX_WORDS) {
			*cause = xasprintf("the command has more than %d words",
			    CMDLINE_MAX_WORDS);
			goto fail;
		}
		/* A word is never longer than the rest of the string. */
		word = xmalloc(strlen(p) + 1);
		w[nw++] = word;
		k = 0;
		quote = '\0';
		for (; *p != '\0' && (quote != '\0' || !is_blank(*p)); p++) {
			if (quote == '\'') {
				if (*p == '\'')
					quote = '\0';
				else
					word[k++] = *p;
			} else if (quote == '"') {
				if (*p == '"')
					quote = '\0';
				else if (*p == '\\' && (p[1] == '"' ||
				    p[1] == '\\'))
					word[k++] = *++p;
				else
					word[k++] = *p;
			} else if (*p == '\'' || *p == '"') {
				quote = *p;
			} else if (*p == '\\' && p[1] != '\0') {
				word[k++] = *++p;
			} else {
				word[k++] = *p;
			}
		}
		word[k] = '\0';
		if (quote != '\0') {
			*cause = xasprintf("the command has a %s quote that is "
			    "not closed", quote == '\'' ? "single" : "double");
			goto fail;
		}
	}
	if (nw == 0 || w[0][0] == '\0') {
		*cause = xstrdup("the command names no program");
		goto fail;
	}
	*out = w;
	*n = nw;
	return 0;
fail:
	cmdline_free(w);
	return -1;
}

void
cmdline_free(char **w)
{
	size_t i;

	for (i = 0; w != NULL && w[i] != NULL; i++)
		free(w[i]);
	free(w);
}

/* Characters that need no quoting for sh. */
static bool
is_plain(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++)
		if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		    "0123456789@%+=:,./_-", *s) == NULL)
			return false;
	return true;
}

char *
cmdline_join(char *const *words)
{
	struct xbuf b = { NULL, 0, 0 };
	const char *c;
	size_t i;

	for (i = 0; words[i] != NULL; i++) {
		if (i > 0)
			xbuf_add(&b, " ", 1);
		if (is_plain(words[i])) {
			xbuf_printf(&b, "%s", words[i]);
			continue;
		}
		/* In single quotes, a quote is closed, escaped, reopened. */
		xbuf_add(&b, "'", 1);
		for (c = words[i]; *c != '\0'; c++)
			if (*c == '\'')
				xbuf_add(&b, "'\\''", 4);
			else
				xbuf_add(&b, c, 1);
		xbuf_add(&b, "'", 1);
	}
	return xbuf_take(&b);
}

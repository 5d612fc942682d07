/* SPDX-License-Identifier: MIT */
/*
 * cmdline.h: a hook's command (submit --on-done, merged --on-done) as
 * one string, split into its words without a shell: mergectl splits the
 * user's, merged its own, by the same rules.
 */
#ifndef CMDLINE_H
#define CMDLINE_H

#include <stddef.h>

/* The most words, and bytes of all of them, a hook's command may have. */
#define CMDLINE_MAX_WORDS 64
#define CMDLINE_MAX_BYTES 4096

/*
 * Splits s into words as sh(1) would with no expansion at all: blanks
 * separate words; '...' keeps everything literally; "..." keeps all
 * but \" and \\, which give " and \; elsewhere \ keeps the next
 * character.  No $, `, *, ~, ; or redirection means anything: they are
 * characters of a word.  Returns 0 with *out, a NULL-terminated vector
 * the caller frees with cmdline_free, and *n words (at least one); or -1
 * with *cause (an unterminated quote, no word, too many or too long).
 */
int cmdline_split(const char *s, char ***out, size_t *n, char **cause);
void cmdline_free(char **);
/* The words again, quoted where sh would need it: for messages. */
char *cmdline_join(char *const *words);

#endif /* CMDLINE_H */

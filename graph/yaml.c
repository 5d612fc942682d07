/* SPDX-License-Identifier: MIT */
/*
 * yaml.c: turn a YAML document into a small tree of nodes with positions.
 *
 * libyaml's event API is used (never its document loader) so that every
 * node keeps the line and column where it starts: config errors point at
 * the exact spot.  Aliases are expanded by copying the anchored node, with a
 * cap on the total number of nodes so that a "billion laughs" document is an
 * error, not an allocation storm.  libyaml's 1-on-success convention is
 * converted here and nowhere else.  ynode_parse_all reads every document
 * of a stream (a mergekit-multi pipeline), ynode_parse exactly one.
 * The scalar helpers at the end (yscalar_*) read a plain scalar's text
 * as YAML 1.2 does, plus the YAML 1.1 booleans that PyYAML takes.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "graph-int.h"

/* Far above any real merge config, far below a memory problem. */
#define YAML_MAX_NODES 200000
#define YAML_MAX_DEPTH 64

struct yaml_anchor {
	char *name;
	struct ynode *node;
};

struct yaml_ctx {
	yaml_parser_t parser;
	const char *file;
	struct graph_diags *diags;
	size_t nodes;
	struct yaml_anchor *anchors;
	size_t nanchors;
	/* libyaml's marks count characters; the text is UTF-8 bytes. */
	const unsigned char *buf;
	size_t len;
	size_t at_char;		/* a place already converted */
	size_t at_byte;
};

static struct ynode *yaml_node(struct yaml_ctx *, yaml_event_t *, int);

/*
 * The byte offset of libyaml's mark index (which counts characters and
 * skips a UTF-8 BOM), so that a document's or a scalar's text can be cut
 * out of the buffer.  Marks come mostly in increasing order: the walk
 * goes on from the last place.  SIZE_MAX where it cannot say (UTF-16
 * input, which libyaml decodes: its marks are no place in the buffer).
 */
static size_t
yaml_byte_at(struct yaml_ctx *y, size_t ch)
{
	const unsigned char *b = y->buf;
	size_t i, c;

	if (y->len >= 2 && ((b[0] == 0xff && b[1] == 0xfe) ||
	    (b[0] == 0xfe && b[1] == 0xff)))
		return SIZE_MAX;
	if (ch < y->at_char || y->at_byte == 0) {
		y->at_char = 0;
		y->at_byte = y->len >= 3 && b[0] == 0xef && b[1] == 0xbb &&
		    b[2] == 0xbf ? 3 : 0;
	}
	i = y->at_byte;
	for (c = y->at_char; c < ch && i < y->len; c++) {
		/* A lead byte's width; libyaml rejects malformed UTF-8. */
		i += b[i] < 0x80 ? 1 : (b[i] & 0xe0) == 0xc0 ? 2 :
		    (b[i] & 0xf0) == 0xe0 ? 3 : 4;
	}
	if (i > y->len)
		i = y->len;
	y->at_char = c;
	y->at_byte = i;
	return i;
}

static struct ynode *
ynode_new(struct yaml_ctx *y, enum ynode_kind kind, yaml_mark_t m)
{
	struct ynode *n;

	n = xcalloc(1, sizeof *n);
	n->kind = kind;
	n->mark.line = (int)m.line + 1;
	n->mark.col = (int)m.column + 1;
	n->begin = n->end = SIZE_MAX;
	y->nodes++;
	return n;
}

static void
ynode_append(struct ynode *parent, struct ynode *child)
{
	if (parent->n == parent->cap) {
		parent->cap = parent->cap ? parent->cap * 2 : 4;
		parent->kids = xreallocarray(parent->kids, parent->cap,
		    sizeof *parent->kids);
	}
	parent->kids[parent->n++] = child;
}

void
ynode_free(struct ynode *n)
{
	size_t i;

	if (n == NULL)
		return;
	for (i = 0; i < n->n; i++)
		ynode_free(n->kids[i]);
	free(n->kids);
	free(n->str);
	free(n);
}

static struct ynode *
ynode_copy(struct yaml_ctx *y, const struct ynode *src)
{
	struct ynode *n;
	size_t i;

	if (y->nodes >= YAML_MAX_NODES)
		return NULL;
	n = xcalloc(1, sizeof *n);
	y->nodes++;
	n->kind = src->kind;
	n->mark = src->mark;
	/* An alias's copy: its text is the anchor's, elsewhere. */
	n->begin = n->end = SIZE_MAX;
	n->quoted = src->quoted;
	n->str = src->str ? xstrdup(src->str) : NULL;
	for (i = 0; i < src->n; i++) {
		struct ynode *k = ynode_copy(y, src->kids[i]);
		if (k == NULL) {
			ynode_free(n);
			return NULL;
		}
		ynode_append(n, k);
	}
	return n;
}

static void
yaml_error(struct yaml_ctx *y, yaml_mark_t m, const char *what)
{
	struct graph_mark gm = { (int)m.line + 1, (int)m.column + 1 };

	graph_diag_at(y->diags, GRAPH_SEV_ERROR, y->file, gm, "%s", what);
}

static int
yaml_next(struct yaml_ctx *y, yaml_event_t *ev)
{
	if (!yaml_parser_parse(&y->parser, ev)) {
		struct graph_mark gm = { (int)y->parser.problem_mark.line + 1,
			(int)y->parser.problem_mark.column + 1 };
		graph_diag_at(y->diags, GRAPH_SEV_ERROR, y->file, gm,
		    "YAML syntax error: %s%s%s",
		    y->parser.problem ? y->parser.problem : "unknown",
		    y->parser.context ? " " : "",
		    y->parser.context ? y->parser.context : "");
		return -EINVAL;
	}
	return 0;
}

static void
yaml_remember(struct yaml_ctx *y, const yaml_char_t *anchor,
    struct ynode *n)
{
	if (anchor == NULL)
		return;
	y->anchors = xreallocarray(y->anchors, y->nanchors + 1,
	    sizeof *y->anchors);
	y->anchors[y->nanchors].name = xstrdup((const char *)anchor);
	y->anchors[y->nanchors].node = n;
	y->nanchors++;
}

static struct ynode *
yaml_alias(struct yaml_ctx *y, yaml_event_t *ev)
{
	const char *name = (const char *)ev->data.alias.anchor;
	struct ynode *n;
	size_t i;

	for (i = y->nanchors; i-- > 0;) {
		if (strcmp(y->anchors[i].name, name) != 0)
			continue;
		if ((n = ynode_copy(y, y->anchors[i].node)) == NULL)
			yaml_error(y, ev->start_mark, "document expands to "
			    "too many nodes (alias bomb?)");
		return n;
	}
	yaml_error(y, ev->start_mark, "unknown alias");
	return NULL;
}

/* Reads children until the matching end event; consumes it. */
static int
yaml_children(struct yaml_ctx *y, struct ynode *parent, yaml_event_type_t end,
    int depth)
{
	yaml_event_t ev;
	struct ynode *k;

	for (;;) {
		if (yaml_next(y, &ev) != 0)
			return -EINVAL;
		if (ev.type == end) {
			yaml_event_delete(&ev);
			return 0;
		}
		k = yaml_node(y, &ev, depth + 1);
		yaml_event_delete(&ev);
		if (k == NULL)
			return -EINVAL;
		ynode_append(parent, k);
		if (parent->kind == YNODE_MAP && parent->n % 2 == 1 &&
		    k->kind != YNODE_SCALAR) {
			struct graph_mark m = k->mark;
			graph_diag_at(y->diags, GRAPH_SEV_ERROR, y->file, m,
			    "mapping keys must be plain strings");
			return -EINVAL;
		}
	}
}

/* Builds the node that starts with ev (which the caller deletes). */
static struct ynode *
yaml_node(struct yaml_ctx *y, yaml_event_t *ev, int depth)
{
	struct ynode *n = NULL;

	if (depth > YAML_MAX_DEPTH || y->nodes >= YAML_MAX_NODES) {
		yaml_error(y, ev->start_mark, "document is nested too deeply "
		    "or has too many nodes");
		return NULL;
	}
	switch (ev->type) {
	case YAML_SCALAR_EVENT:
		n = ynode_new(y, YNODE_SCALAR, ev->start_mark);
		n->str = xstrndup((const char *)ev->data.scalar.value,
		    ev->data.scalar.length);
		n->begin = yaml_byte_at(y, ev->start_mark.index);
		n->end = yaml_byte_at(y, ev->end_mark.index);
		n->quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
		if (strlen(n->str) != ev->data.scalar.length) {
			yaml_error(y, ev->start_mark, "string contains a NUL "
			    "character");
			ynode_free(n);
			return NULL;
		}
		yaml_remember(y, ev->data.scalar.anchor, n);
		return n;
	case YAML_SEQUENCE_START_EVENT:
		n = ynode_new(y, YNODE_SEQ, ev->start_mark);
		yaml_remember(y, ev->data.sequence_start.anchor, n);
		if (yaml_children(y, n, YAML_SEQUENCE_END_EVENT, depth) != 0)
			goto fail;
		return n;
	case YAML_MAPPING_START_EVENT:
		n = ynode_new(y, YNODE_MAP, ev->start_mark);
		yaml_remember(y, ev->data.mapping_start.anchor, n);
		if (yaml_children(y, n, YAML_MAPPING_END_EVENT, depth) != 0)
			goto fail;
		return n;
	case YAML_ALIAS_EVENT:
		return yaml_alias(y, ev);
	default:
		yaml_error(y, ev->start_mark, "unexpected YAML event");
		return NULL;
	}
fail:
	/* Parsing stops here, so no alias can reach the freed anchors. */
	ynode_free(n);
	return NULL;
}

/*
 * The next document of the stream into *doc (root NULL for an empty
 * one); 0 at the stream's end, 1 with a document, -1 on error.  Anchors
 * are a document's own: they go when it ends.
 */
static int
yaml_document(struct yaml_ctx *y, struct ynode_doc *doc)
{
	yaml_event_t ev;
	size_t i;

	memset(doc, 0, sizeof *doc);
	for (;;) {
		if (yaml_next(y, &ev) != 0)
			return -1;
		if (ev.type == YAML_STREAM_START_EVENT) {
			yaml_event_delete(&ev);
			continue;
		}
		if (ev.type == YAML_STREAM_END_EVENT) {
			yaml_event_delete(&ev);
			return 0;
		}
		if (ev.type == YAML_DOCUMENT_START_EVENT) {
			doc->begin = yaml_byte_at(y, ev.end_mark.index);
			doc->mark.line = (int)ev.start_mark.line + 1;
			doc->mark.col = (int)ev.start_mark.column + 1;
			yaml_event_delete(&ev);
			continue;
		}
		break;
	}
	doc->root = yaml_node(y, &ev, 0);
	yaml_event_delete(&ev);
	if (doc->root == NULL)
		return -1;
	if (yaml_next(y, &ev) != 0)
		goto fail;
	/* The document's end. */
	doc->end = yaml_byte_at(y, ev.start_mark.index);
	yaml_event_delete(&ev);
	for (i = 0; i < y->nanchors; i++)
		free(y->anchors[i].name);
	y->nanchors = 0;
	/* A document of nothing (a "---" at the end) is a null scalar. */
	if (doc->root->kind == YNODE_SCALAR && ynode_is_null(doc->root)) {
		ynode_free(doc->root);
		doc->root = NULL;
	}
	return 1;
fail:
	ynode_free(doc->root);
	doc->root = NULL;
	return -1;
}

/*
 * Every document of the stream that holds something, into *out (the
 * caller frees each root and the array), in order.  0, or -EINVAL with
 * the problem in d.
 */
int
ynode_parse_all(const char *file, const char *buf, size_t len,
    struct ynode_doc **out, size_t *n, struct graph_diags *d)
{
	struct yaml_ctx y;
	struct ynode_doc doc, *v = NULL;
	size_t i, cap = 0, before = d->nerrors;
	int rc;

	memset(&y, 0, sizeof y);
	y.file = file;
	y.diags = d;
	y.buf = (const unsigned char *)buf;
	y.len = len;
	*out = NULL;
	*n = 0;
	if (!yaml_parser_initialize(&y.parser)) {
		graph_diag_add(d, GRAPH_SEV_ERROR, file,
		    "cannot initialise the YAML parser");
		return -ENOMEM;
	}
	yaml_parser_set_input_string(&y.parser, (const unsigned char *)buf,
	    len);
	while ((rc = yaml_document(&y, &doc)) == 1) {
		if (doc.root == NULL)
			continue;
		if (*n == cap) {
			cap = cap ? 2 * cap : 4;
			v = xreallocarray(v, cap, sizeof *v);
		}
		v[(*n)++] = doc;
	}
	yaml_parser_delete(&y.parser);
	for (i = 0; i < y.nanchors; i++)
		free(y.anchors[i].name);
	free(y.anchors);
	if (rc < 0 || d->nerrors != before) {
		for (i = 0; i < *n; i++)
			ynode_free(v[i].root);
		free(v);
		*n = 0;
		return -EINVAL;
	}
	*out = v;
	return 0;
}

int
ynode_parse(const char *file, const char *buf, size_t len,
    struct ynode **out, struct graph_diags *d)
{
	struct ynode_doc *docs;
	size_t n, i;

	*out = NULL;
	if (ynode_parse_all(file, buf, len, &docs, &n, d) != 0)
		return -EINVAL;
	if (n > 1) {
		graph_diag_at(d, GRAPH_SEV_ERROR, file, docs[1].mark, "more "
		    "than one YAML document: a multi-stage (mergekit-multi) "
		    "file, which 'mergectl run FILE OUT' and mergekit-multi "
		    "run; this command reads one config");
		for (i = 0; i < n; i++)
			ynode_free(docs[i].root);
		free(docs);
		return -EINVAL;
	}
	if (n == 0) {
		free(docs);
		graph_diag_add(d, GRAPH_SEV_ERROR, file, "the file is empty");
		return -EINVAL;
	}
	*out = docs[0].root;
	free(docs);
	return 0;
}

/* YAML's null (empty, ~, null): as in mergekit, "not set". */
bool
ynode_is_null(const struct ynode *n)
{
	return n->kind == YNODE_SCALAR && !n->quoted && (n->str[0] == '\0' ||
	    strcmp(n->str, "~") == 0 || strcmp(n->str, "null") == 0 ||
	    strcmp(n->str, "Null") == 0 || strcmp(n->str, "NULL") == 0);
}

/* The value of key in map, or NULL when absent or null. */
const struct ynode *
ynode_get(const struct ynode *map, const char *key)
{
	size_t i;

	if (map == NULL || map->kind != YNODE_MAP)
		return NULL;
	for (i = 0; i + 1 < map->n; i += 2)
		if (strcmp(map->kids[i]->str, key) == 0)
			return ynode_is_null(map->kids[i + 1]) ? NULL :
			    map->kids[i + 1];
	return NULL;
}

/* s is not empty and holds only characters of set. */
bool
yscalar_digits(const char *s, const char *set)
{
	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++)
		if (strchr(set, *s) == NULL)
			return false;
	return true;
}

/* YAML 1.2 core schema float: [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
static bool
is_yaml_float(const char *s)
{
	bool digits = false;

	if (*s == '+' || *s == '-')
		s++;
	while (*s >= '0' && *s <= '9') {
		s++;
		digits = true;
	}
	if (*s == '.') {
		s++;
		while (*s >= '0' && *s <= '9') {
			s++;
			digits = true;
		}
	}
	if (!digits)
		return false;
	if (*s == 'e' || *s == 'E') {
		s++;
		if (*s == '+' || *s == '-')
			s++;
		if (!(*s >= '0' && *s <= '9'))
			return false;
		while (*s >= '0' && *s <= '9')
			s++;
	}
	return *s == '\0';
}

/* A YAML boolean word; -EINVAL if s is none. */
int
yscalar_bool(const char *s, bool *out)
{
	/* YAML 1.2 plus the 1.1 words mergekit's PyYAML also takes. */
	static const char *const yes[] = { "true", "yes", "on" };
	static const char *const no[] = { "false", "no", "off" };
	size_t i;

	for (i = 0; i < 3; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

/* A YAML 1.2 number (or a boolean, as 1 or 0); -EINVAL if s is none. */
int
yscalar_number(const char *s, double *out)
{
	char *end;
	bool b, neg;

	if (yscalar_bool(s, &b) == 0) {
		*out = b ? 1.0 : 0.0;
		return 0;
	}
	if (strncmp(s, "0x", 2) == 0 && yscalar_digits(s + 2,
	    "0123456789abcdefABCDEF")) {
		*out = (double)strtoull(s + 2, NULL, 16);
		return 0;
	}
	if (strncmp(s, "0o", 2) == 0 && yscalar_digits(s + 2, "01234567")) {
		*out = (double)strtoull(s + 2, NULL, 8);
		return 0;
	}
	if (is_yaml_float(s)) {
		*out = strtod(s, &end);
		return *end == '\0' ? 0 : -EINVAL;
	}
	/* YAML 1.2 spells infinities and NaN this way; callers refuse them. */
	if (strcmp(s, ".nan") == 0 || strcmp(s, ".NaN") == 0 ||
	    strcmp(s, ".NAN") == 0) {
		*out = NAN;
		return 0;
	}
	neg = *s == '-';
	if (*s == '+' || *s == '-')
		s++;
	if (strcmp(s, ".inf") == 0 || strcmp(s, ".Inf") == 0 ||
	    strcmp(s, ".INF") == 0) {
		*out = neg ? -INFINITY : INFINITY;
		return 0;
	}
	return -EINVAL;
}

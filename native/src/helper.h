/* provision-helper: shared declarations.
 *
 * CLI contract: one JSON object on stdout; exit 0 success, 1 runtime error,
 * 2 usage error.  On failure stdout holds {"error": "...", ...} and stderr a
 * one-line message. */
#ifndef PROVISION_HELPER_H
#define PROVISION_HELPER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define HELPER_VERSION "0.1.0"

enum { RC_OK = 0, RC_RUNTIME = 1, RC_USAGE = 2 };

/* ---- json.c: a tiny streaming JSON writer ------------------------------ */
#define JSON_MAX_DEPTH 16

typedef struct json {
    FILE *out;
    int depth;
    bool need_comma[JSON_MAX_DEPTH];
} json_t;

void json_init(json_t *j, FILE *out);
/* key is NULL inside arrays and for the top-level object */
void json_obj_begin(json_t *j, const char *key);
void json_obj_end(json_t *j);
void json_arr_begin(json_t *j, const char *key);
void json_arr_end(json_t *j);
void json_str(json_t *j, const char *key, const char *val);
void json_int(json_t *j, const char *key, long long val);
void json_uint(json_t *j, const char *key, unsigned long long val);
void json_bool(json_t *j, const char *key, bool val);
void json_double(json_t *j, const char *key, double val);
/* writes a trailing newline and flushes; returns -1 if stdout failed */
int json_finish(json_t *j);
void json_write_string(FILE *out, const char *s);

/* ---- errors (json.c) ---------------------------------------------------- */
/* Called before exiting on failure (e.g. to remove a temp file). */
void set_cleanup(void (*fn)(void));

/* Print {"error": msg, <fields...>, "errno": err} and a line on stderr, then
 * exit(rc).  fields is NULL or a NULL-terminated list of key, value strings.
 * err != 0 appends ": strerror(err)" to the message. */
_Noreturn void fail(int rc, int err, const char *const *fields, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define FIELDS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* ---- util.c ------------------------------------------------------------- */
/* Read a small text file (trailing newline stripped).  Returns length or -1
 * with errno set. */
ssize_t read_text(const char *path, char *buf, size_t cap);
/* Write s to an existing file (no O_CREAT: cgroup interface files must
 * exist).  Returns 0 or -1 with errno set. */
int write_text(const char *path, const char *s);
bool path_exists(const char *path);
bool is_dir(const char *path);
/* Strict unsigned decimal parse; false on junk or overflow. */
bool parse_u64(const char *s, uint64_t *out);
/* Byte size with optional binary suffix: 512, 4k, 64M, 1G, 2GiB, 1T. */
bool parse_size(const char *s, uint64_t *out);
/* snprintf that fails (RC_RUNTIME) instead of truncating. */
void path_join(char *out, size_t cap, const char *a, const char *b);

/* ---- commands ------------------------------------------------------------ */
int cmd_clone(int argc, char **argv);
int cmd_slice(int argc, char **argv);
int cmd_reflink_probe(int argc, char **argv);

#endif

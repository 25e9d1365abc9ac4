/* JSON output and error reporting. */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "helper.h"

void json_init(json_t *j, FILE *out)
{
    j->out = out;
    j->depth = 0;
    memset(j->need_comma, 0, sizeof j->need_comma);
}

/* Length of a valid UTF-8 sequence starting at s, or 0 if invalid. */
static size_t utf8_len(const unsigned char *s)
{
    unsigned char c = s[0];
    size_t n;
    unsigned int cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

void json_write_string(FILE *out, const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    fputc('"', out);
    while (*s) {
        unsigned char c = *s;
        if (c == '"' || c == '\\') {
            fputc('\\', out);
            fputc(c, out);
            s++;
        } else if (c == '\n') {
            fputs("\\n", out);
            s++;
        } else if (c == '\t') {
            fputs("\\t", out);
            s++;
        } else if (c < 0x20 || c == 0x7F) {
            fprintf(out, "\\u%04x", c);
            s++;
        } else {
            size_t n = utf8_len(s);
            if (n == 0) { /* invalid byte: keep the output valid JSON */
                fputs("\\ufffd", out);
                s++;
            } else {
                fwrite(s, 1, n, out);
                s += n;
            }
        }
    }
    fputc('"', out);
}

static void json_prefix(json_t *j, const char *key)
{
    if (j->depth > 0) {
        if (j->need_comma[j->depth])
            fputs(", ", j->out);
        j->need_comma[j->depth] = true;
    }
    if (key) {
        json_write_string(j->out, key);
        fputs(": ", j->out);
    }
}

static void json_open(json_t *j, const char *key, char c)
{
    json_prefix(j, key);
    fputc(c, j->out);
    if (j->depth + 1 >= JSON_MAX_DEPTH)
        abort(); /* programming error */
    j->depth++;
    j->need_comma[j->depth] = false;
}

void json_obj_begin(json_t *j, const char *key) { json_open(j, key, '{'); }
void json_arr_begin(json_t *j, const char *key) { json_open(j, key, '['); }

void json_obj_end(json_t *j)
{
    j->depth--;
    fputc('}', j->out);
}

void json_arr_end(json_t *j)
{
    j->depth--;
    fputc(']', j->out);
}

void json_str(json_t *j, const char *key, const char *val)
{
    json_prefix(j, key);
    json_write_string(j->out, val);
}

void json_int(json_t *j, const char *key, long long val)
{
    json_prefix(j, key);
    fprintf(j->out, "%lld", val);
}

void json_uint(json_t *j, const char *key, unsigned long long val)
{
    json_prefix(j, key);
    fprintf(j->out, "%llu", val);
}

void json_bool(json_t *j, const char *key, bool val)
{
    json_prefix(j, key);
    fputs(val ? "true" : "false", j->out);
}

void json_double(json_t *j, const char *key, double val)
{
    json_prefix(j, key);
    if (!isfinite(val)) {
        fputs("null", j->out);
        return;
    }
    char buf[64];
    snprintf(buf, sizeof buf, "%.10g", val);
    /* %g may print "1e+20"; that is valid JSON.  Make integers read as
     * numbers either way: "2" is fine JSON, keep it. */
    fputs(buf, j->out);
}

int json_finish(json_t *j)
{
    fputc('\n', j->out);
    if (fflush(j->out) != 0 || ferror(j->out))
        return -1;
    return 0;
}

/* ---- errors ------------------------------------------------------------- */
static void (*cleanup_hook)(void);

void set_cleanup(void (*fn)(void)) { cleanup_hook = fn; }

void fail(int rc, int err, const char *const *fields, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        msg[0] = '\0';
    if (err) {
        size_t len = strlen(msg);
        snprintf(msg + len, sizeof msg - len, ": %s", strerror(err));
    }
    if (cleanup_hook)
        cleanup_hook();

    json_t j;
    json_init(&j, stdout);
    json_obj_begin(&j, NULL);
    json_str(&j, "error", msg);
    for (const char *const *f = fields; f && f[0] && f[1]; f += 2)
        json_str(&j, f[0], f[1]);
    if (err)
        json_int(&j, "errno", err);
    json_obj_end(&j);
    json_finish(&j);
    fprintf(stderr, "provision-helper: %s\n", msg);
    exit(rc);
}

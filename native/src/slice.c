/* slice: create, inspect and remove cgroups ("slices") under the cgroup root.
 *
 * cgroup v2 (unified, root has cgroup.controllers) and v1 (one hierarchy per
 * controller under the root: cpu, memory, pids, cpuset) are detected at run
 * time.  Limits use the v2 names and are translated for v1:
 *
 *   cpu.max      quota period   v1 cpu.cfs_quota_us / cpu.cfs_period_us
 *   cpus=N       quota N*100000 period 100000 (convenience)
 *   cpu.weight   1..10000       v1 cpu.shares = weight * 1024 / 100
 *   memory.max   bytes|max      v1 memory.limit_in_bytes
 *   memory.high  bytes|max      v1 memory.soft_limit_in_bytes
 *   pids.max     n|max          v1 pids.max
 *   cpuset.cpus  list           v1 cpuset.cpus (+ cpuset.mems from the parent)
 *
 * The root is $PROVISION_CGROUP_ROOT or /sys/fs/cgroup. */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "helper.h"

#define CG1_MAGIC 0x27e0ebL
#define CG2_MAGIC 0x63677270L
#define UNLIMITED (-1LL)
/* v1 reports "no limit" as a huge page-aligned number */
#define V1_UNLIMITED_FLOOR (1LL << 62)
#define MAX_HIER 32
#define DEFAULT_PERIOD 100000ULL

enum key { K_CPU_MAX, K_CPU_WEIGHT, K_MEM_MAX, K_MEM_HIGH, K_PIDS_MAX, K_CPUSET_CPUS, K_COUNT };
static const char *const key_name[K_COUNT] = {"cpu.max",     "cpu.weight", "memory.max",
                                               "memory.high", "pids.max",   "cpuset.cpus"};
static const char *const key_ctrl[K_COUNT] = {"cpu", "cpu", "memory", "memory", "pids", "cpuset"};
static const char *const core_ctrls[] = {"cpu", "memory", "pids", "cpuset"};
#define N_CORE (sizeof core_ctrls / sizeof core_ctrls[0])

struct limits {
    bool set[K_COUNT];
    long long quota; /* UNLIMITED = max */
    bool period_set;
    unsigned long long period;
    unsigned long long weight;
    long long mem_max, mem_high, pids_max;
    char cpus[256];
};

struct cg {
    int version;
    char root[PATH_MAX];
    /* v1: every mounted hierarchy (named ones too), for membership and rm */
    char hier[MAX_HIER][NAME_MAX + 1];
    int nhier;
    /* v1: the v2 mount of a hybrid layout ("unified"), or "". No limits are
     * set there, but Docker makes a slice's cgroup in it too, so rm removes
     * it with the others. */
    char hybrid[NAME_MAX + 1];
};

static const char slice_usage[] =
    "provision-helper slice apply PATH key=value... | slice show PATH... | slice rm PATH";

/* ---- small helpers --------------------------------------------------------- */
static bool word_in(const char *list, const char *word)
{
    size_t wl = strlen(word);
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == '\n' || *p == '\t')
            p++;
        const char *s = p;
        while (*p && *p != ' ' && *p != '\n' && *p != '\t')
            p++;
        if ((size_t)(p - s) == wl && strncmp(s, word, wl) == 0)
            return true;
    }
    return false;
}

static bool is_cgroupfs(const char *dir)
{
    struct statfs sf;
    if (statfs(dir, &sf) != 0)
        return false;
    return (long)sf.f_type == CG1_MAGIC || (long)sf.f_type == CG2_MAGIC;
}

static void fmt_limit(char *buf, size_t cap, long long v)
{
    if (v == UNLIMITED)
        snprintf(buf, cap, "max");
    else
        snprintf(buf, cap, "%lld", v);
}

/* "max", "-1" or a v1 huge value -> UNLIMITED; else the number. */
static bool parse_limit_text(const char *s, long long *out)
{
    uint64_t v;
    if (strcmp(s, "max") == 0 || strcmp(s, "-1") == 0) {
        *out = UNLIMITED;
        return true;
    }
    if (!parse_u64(s, &v))
        return false;
    *out = v >= (uint64_t)V1_UNLIMITED_FLOOR ? UNLIMITED : (long long)v;
    return true;
}

static bool read_limit(const char *path, long long *out)
{
    char buf[64];
    if (read_text(path, buf, sizeof buf) < 0)
        return false;
    return parse_limit_text(buf, out);
}

static bool read_u64_file(const char *path, unsigned long long *out)
{
    char buf[64];
    uint64_t v;
    if (read_text(path, buf, sizeof buf) < 0 || !parse_u64(buf, &v))
        return false;
    *out = v;
    return true;
}

static void validate_path(const char *path)
{
    size_t len = strlen(path);
    if (len == 0 || len > 512)
        fail(RC_USAGE, 0, FIELDS("path", path), "slice: PATH must be 1..512 characters");
    if (path[0] == '/')
        fail(RC_USAGE, 0, FIELDS("path", path),
             "slice: PATH is relative to the cgroup root (e.g. provision/tenant-a), not '%s'", path);
    const char *p = path;
    while (*p) {
        const char *s = p;
        while (*p && *p != '/') {
            unsigned char c = (unsigned char)*p;
            if (!(isalnum(c) || c == '-' || c == '_' || c == '.' || c == '@' || c == ':' || c == '+'))
                fail(RC_USAGE, 0, FIELDS("path", path), "slice: invalid character in PATH '%s'", path);
            p++;
        }
        size_t n = (size_t)(p - s);
        if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
            fail(RC_USAGE, 0, FIELDS("path", path),
                 "slice: PATH components must be non-empty names, not '.' or '..': '%s'", path);
        if (*p == '/')
            p++;
    }
    if (path[len - 1] == '/')
        fail(RC_USAGE, 0, FIELDS("path", path), "slice: PATH must not end with '/'");
}

/* ---- detection -------------------------------------------------------------- */
static void detect(struct cg *cg)
{
    const char *root = getenv("PROVISION_CGROUP_ROOT");
    if (!root || !*root)
        root = "/sys/fs/cgroup";
    size_t len = strlen(root);
    if (len >= sizeof cg->root)
        fail(RC_RUNTIME, ENAMETOOLONG, FIELDS("root", root), "cgroup root");
    memcpy(cg->root, root, len + 1);
    while (len > 1 && cg->root[len - 1] == '/')
        cg->root[--len] = '\0';

    char p[PATH_MAX];
    path_join(p, sizeof p, cg->root, "cgroup.controllers");
    if (path_exists(p)) {
        cg->version = 2;
        cg->nhier = 0;
        return;
    }
    cg->version = 1;
    cg->nhier = 0;
    cg->hybrid[0] = '\0';
    DIR *d = opendir(cg->root);
    if (!d)
        fail(RC_RUNTIME, errno, FIELDS("root", cg->root), "cannot open the cgroup root '%s'", cg->root);
    struct dirent *e;
    while ((e = readdir(d)) != NULL && cg->nhier < MAX_HIER) {
        if (e->d_name[0] == '.')
            continue;
        char h[PATH_MAX], f[PATH_MAX];
        path_join(h, sizeof h, cg->root, e->d_name);
        path_join(f, sizeof f, h, "cgroup.procs");
        if (!path_exists(f))
            continue;
        path_join(f, sizeof f, h, "cgroup.controllers");
        if (path_exists(f)) { /* a v2 mount inside a hybrid layout */
            snprintf(cg->hybrid, sizeof cg->hybrid, "%s", e->d_name);
            continue;
        }
        snprintf(cg->hier[cg->nhier++], NAME_MAX + 1, "%s", e->d_name);
    }
    closedir(d);
    bool any_core = false;
    for (size_t i = 0; i < N_CORE; i++)
        for (int k = 0; k < cg->nhier; k++)
            if (strcmp(cg->hier[k], core_ctrls[i]) == 0)
                any_core = true;
    if (!any_core)
        fail(RC_RUNTIME, 0, FIELDS("root", cg->root),
             "no cgroup filesystem at '%s' (no cgroup.controllers, no v1 cpu/memory/pids/cpuset "
             "hierarchies)", cg->root);
}

static bool v1_has(const struct cg *cg, const char *ctrl)
{
    for (int k = 0; k < cg->nhier; k++)
        if (strcmp(cg->hier[k], ctrl) == 0)
            return true;
    return false;
}

/* ---- parsing key=value ----------------------------------------------------------- */
static _Noreturn void bad_value(const char *key, const char *val, const char *want)
{
    fail(RC_USAGE, 0, FIELDS("key", key, "value", val), "slice: %s=%s: expected %s", key, val, want);
}

static void parse_cpu_max(const char *val, struct limits *l)
{
    char buf[64];
    if (strlen(val) >= sizeof buf)
        bad_value("cpu.max", val, "'QUOTA PERIOD', 'QUOTA/PERIOD' or 'max'");
    strcpy(buf, val);
    char *sep = strpbrk(buf, " /");
    if (sep)
        *sep++ = '\0';
    uint64_t q, p;
    if (strcmp(buf, "max") == 0)
        l->quota = UNLIMITED;
    else if (parse_u64(buf, &q) && q >= 1000 && q <= (uint64_t)INT64_MAX)
        l->quota = (long long)q;
    else
        bad_value("cpu.max", val, "a quota >= 1000 (microseconds) or 'max'");
    l->period_set = false;
    if (sep) {
        if (!parse_u64(sep, &p) || p < 1000 || p > 1000000)
            bad_value("cpu.max", val, "a period of 1000..1000000 microseconds");
        l->period = p;
        l->period_set = true;
    }
    l->set[K_CPU_MAX] = true;
}

static void parse_kv(const char *arg, struct limits *l)
{
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg)
        fail(RC_USAGE, 0, FIELDS("arg", arg, "usage", slice_usage), "slice: expected key=value, got '%s'", arg);
    char key[32];
    size_t kl = (size_t)(eq - arg);
    if (kl >= sizeof key)
        fail(RC_USAGE, 0, FIELDS("arg", arg), "slice: unknown limit in '%s'", arg);
    memcpy(key, arg, kl);
    key[kl] = '\0';
    const char *val = eq + 1;
    uint64_t u;

    if (strcmp(key, "cpus") == 0) {
        if (strcmp(val, "max") == 0) {
            l->quota = UNLIMITED;
            l->period_set = false;
        } else {
            char *end;
            errno = 0;
            double c = strtod(val, &end);
            if (errno || end == val || *end || !isfinite(c) || c < 0.01 || c > 1e6)
                bad_value(key, val, "a number of CPUs >= 0.01 (e.g. 1.5) or 'max'");
            l->quota = (long long)(c * (double)DEFAULT_PERIOD + 0.5);
            l->period = DEFAULT_PERIOD;
            l->period_set = true;
        }
        l->set[K_CPU_MAX] = true;
    } else if (strcmp(key, "cpu.max") == 0) {
        parse_cpu_max(val, l);
    } else if (strcmp(key, "cpu.weight") == 0) {
        if (!parse_u64(val, &u) || u < 1 || u > 10000)
            bad_value(key, val, "an integer 1..10000");
        l->weight = u;
        l->set[K_CPU_WEIGHT] = true;
    } else if (strcmp(key, "memory.max") == 0 || strcmp(key, "memory.high") == 0) {
        long long v;
        if (strcmp(val, "max") == 0)
            v = UNLIMITED;
        else if (parse_size(val, &u) && u <= (uint64_t)INT64_MAX / 2)
            v = (long long)u;
        else
            bad_value(key, val, "a byte size (e.g. 536870912, 512M, 4GiB) or 'max'");
        if (key[7] == 'm') {
            l->mem_max = v;
            l->set[K_MEM_MAX] = true;
        } else {
            l->mem_high = v;
            l->set[K_MEM_HIGH] = true;
        }
    } else if (strcmp(key, "pids.max") == 0) {
        if (strcmp(val, "max") == 0)
            l->pids_max = UNLIMITED;
        else if (parse_u64(val, &u) && u <= (uint64_t)INT_MAX)
            l->pids_max = (long long)u;
        else
            bad_value(key, val, "a non-negative integer or 'max'");
        l->set[K_PIDS_MAX] = true;
    } else if (strcmp(key, "cpuset.cpus") == 0) {
        size_t n = strlen(val);
        if (n == 0 || n >= sizeof l->cpus || strspn(val, "0123456789,-") != n)
            bad_value(key, val, "a CPU list such as 0-3,6");
        memcpy(l->cpus, val, n + 1);
        l->set[K_CPUSET_CPUS] = true;
    } else {
        fail(RC_USAGE, 0, FIELDS("key", key),
             "slice: unknown limit '%s' (known: cpus, cpu.max, cpu.weight, memory.max, "
             "memory.high, pids.max, cpuset.cpus)", key);
    }
}

/* ---- membership ---------------------------------------------------------------- */
struct pidset {
    long *v;
    size_t n, cap;
};

static void pidset_add(struct pidset *s, long pid)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        long *v = realloc(s->v, cap * sizeof *v);
        if (!v)
            fail(RC_RUNTIME, ENOMEM, NULL, "out of memory");
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = pid;
}

static int cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

static size_t pidset_unique(struct pidset *s)
{
    if (s->n == 0)
        return 0;
    qsort(s->v, s->n, sizeof *s->v, cmp_long);
    size_t u = 1;
    for (size_t i = 1; i < s->n; i++)
        if (s->v[i] != s->v[u - 1])
            s->v[u++] = s->v[i];
    s->n = u;
    return u;
}

/* Every pid in dir/cgroup.procs and in its descendants' files. */
static void collect_procs(const char *dir, struct pidset *s)
{
    char f[PATH_MAX];
    path_join(f, sizeof f, dir, "cgroup.procs");
    FILE *fp = fopen(f, "re");
    if (fp) {
        long pid;
        while (fscanf(fp, "%ld", &pid) == 1)
            pidset_add(s, pid);
        fclose(fp);
    }
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char sub[PATH_MAX];
        path_join(sub, sizeof sub, dir, e->d_name);
        if (is_dir(sub))
            collect_procs(sub, s);
    }
    closedir(d);
}

/* ---- observed state --------------------------------------------------------------- */
struct observed {
    bool exists;
    bool has[K_COUNT];
    long long quota;
    unsigned long long period;
    unsigned long long weight;
    long long mem_max, mem_high, pids_max;
    char cpus[256];
    size_t members;
    char controllers[512]; /* space separated */
};

static void add_word(char *list, size_t cap, const char *w)
{
    size_t len = strlen(list);
    snprintf(list + len, cap - len, "%s%s", len ? " " : "", w);
}

static void observe_v2(const struct cg *cg, const char *path, struct observed *o)
{
    char dir[PATH_MAX], f[PATH_MAX], buf[256];
    memset(o, 0, sizeof *o);
    path_join(dir, sizeof dir, cg->root, path);
    if (!is_dir(dir))
        return;
    o->exists = true;

    path_join(f, sizeof f, dir, "cpu.max");
    if (read_text(f, buf, sizeof buf) >= 0) {
        char *sp = strchr(buf, ' ');
        uint64_t p = DEFAULT_PERIOD;
        if (sp) {
            *sp++ = '\0';
            if (!parse_u64(sp, &p))
                p = DEFAULT_PERIOD;
        }
        if (parse_limit_text(buf, &o->quota)) {
            o->period = p;
            o->has[K_CPU_MAX] = true;
        }
    }
    path_join(f, sizeof f, dir, "cpu.weight");
    o->has[K_CPU_WEIGHT] = read_u64_file(f, &o->weight);
    path_join(f, sizeof f, dir, "memory.max");
    o->has[K_MEM_MAX] = read_limit(f, &o->mem_max);
    path_join(f, sizeof f, dir, "memory.high");
    o->has[K_MEM_HIGH] = read_limit(f, &o->mem_high);
    path_join(f, sizeof f, dir, "pids.max");
    o->has[K_PIDS_MAX] = read_limit(f, &o->pids_max);
    path_join(f, sizeof f, dir, "cpuset.cpus");
    o->has[K_CPUSET_CPUS] = read_text(f, o->cpus, sizeof o->cpus) >= 0;
    path_join(f, sizeof f, dir, "cgroup.controllers");
    if (read_text(f, o->controllers, sizeof o->controllers) < 0)
        o->controllers[0] = '\0';

    struct pidset s = {NULL, 0, 0};
    collect_procs(dir, &s);
    o->members = pidset_unique(&s);
    free(s.v);
}

static void observe_v1(const struct cg *cg, const char *path, struct observed *o)
{
    char dir[PATH_MAX], h[PATH_MAX], f[PATH_MAX];
    memset(o, 0, sizeof *o);
    struct pidset s = {NULL, 0, 0};
    for (int k = 0; k < cg->nhier; k++) {
        path_join(h, sizeof h, cg->root, cg->hier[k]);
        path_join(dir, sizeof dir, h, path);
        if (!is_dir(dir))
            continue;
        o->exists = true;
        collect_procs(dir, &s);
        const char *c = cg->hier[k];
        bool core = false;
        for (size_t i = 0; i < N_CORE; i++)
            core = core || strcmp(c, core_ctrls[i]) == 0;
        if (core)
            add_word(o->controllers, sizeof o->controllers, c);
        if (strcmp(c, "cpu") == 0) {
            unsigned long long period, shares;
            long long quota;
            path_join(f, sizeof f, dir, "cpu.cfs_quota_us");
            bool okq = read_limit(f, &quota);
            path_join(f, sizeof f, dir, "cpu.cfs_period_us");
            if (okq && read_u64_file(f, &period)) {
                o->quota = quota;
                o->period = period;
                o->has[K_CPU_MAX] = true;
            }
            path_join(f, sizeof f, dir, "cpu.shares");
            if (read_u64_file(f, &shares)) {
                unsigned long long w = (shares * 100 + 512) / 1024;
                o->weight = w < 1 ? 1 : w > 10000 ? 10000 : w;
                o->has[K_CPU_WEIGHT] = true;
            }
        } else if (strcmp(c, "memory") == 0) {
            path_join(f, sizeof f, dir, "memory.limit_in_bytes");
            o->has[K_MEM_MAX] = read_limit(f, &o->mem_max);
            path_join(f, sizeof f, dir, "memory.soft_limit_in_bytes");
            o->has[K_MEM_HIGH] = read_limit(f, &o->mem_high);
        } else if (strcmp(c, "pids") == 0) {
            path_join(f, sizeof f, dir, "pids.max");
            o->has[K_PIDS_MAX] = read_limit(f, &o->pids_max);
        } else if (strcmp(c, "cpuset") == 0) {
            path_join(f, sizeof f, dir, "cpuset.cpus");
            o->has[K_CPUSET_CPUS] = read_text(f, o->cpus, sizeof o->cpus) >= 0;
        }
    }
    o->members = pidset_unique(&s);
    free(s.v);
}

static void observe(const struct cg *cg, const char *path, struct observed *o)
{
    if (cg->version == 2)
        observe_v2(cg, path, o);
    else
        observe_v1(cg, path, o);
}

static void json_limit(json_t *j, const char *key, long long v)
{
    if (v == UNLIMITED)
        json_str(j, key, "max");
    else
        json_int(j, key, v);
}

static void print_slice(json_t *j, const char *key, const struct cg *cg, const char *path,
                        const struct observed *o, const struct limits *applied)
{
    json_obj_begin(j, key);
    json_str(j, "path", path);
    if (applied) {
        json_arr_begin(j, "applied");
        for (int k = 0; k < K_COUNT; k++)
            if (applied->set[k])
                json_str(j, NULL, key_name[k]);
        json_arr_end(j);
    }
    json_int(j, "version", cg->version);
    json_bool(j, "exists", o->exists);
    if (o->exists) {
        json_obj_begin(j, "limits");
        if (o->has[K_CPU_MAX]) {
            json_obj_begin(j, "cpu.max");
            json_limit(j, "quota", o->quota);
            json_uint(j, "period", o->period);
            json_obj_end(j);
            if (o->quota == UNLIMITED || o->period == 0)
                json_str(j, "cpus", "max");
            else
                json_double(j, "cpus", (double)o->quota / (double)o->period);
        }
        if (o->has[K_CPU_WEIGHT])
            json_uint(j, "cpu.weight", o->weight);
        if (o->has[K_MEM_MAX])
            json_limit(j, "memory.max", o->mem_max);
        if (o->has[K_MEM_HIGH])
            json_limit(j, "memory.high", o->mem_high);
        if (o->has[K_PIDS_MAX])
            json_limit(j, "pids.max", o->pids_max);
        if (o->has[K_CPUSET_CPUS])
            json_str(j, "cpuset.cpus", o->cpus);
        json_obj_end(j);
        json_uint(j, "members", (unsigned long long)o->members);
        json_arr_begin(j, "controllers");
        char tmp[sizeof o->controllers];
        memcpy(tmp, o->controllers, sizeof tmp);
        for (char *save = NULL, *w = strtok_r(tmp, " \n", &save); w; w = strtok_r(NULL, " \n", &save))
            json_str(j, NULL, w);
        json_arr_end(j);
    }
    json_obj_end(j);
}

/* ---- apply ----------------------------------------------------------------------- */
static void write_or_fail(const char *file, const char *val, const char *ctrl, const char *path)
{
    if (write_text(file, val) == 0)
        return;
    int e = errno;
    if (e == ENOENT)
        fail(RC_RUNTIME, 0, FIELDS("controller", ctrl, "path", path, "file", file),
             "cgroup controller '%s' is not enabled for slice '%s' (no %s)", ctrl, path, file);
    fail(RC_RUNTIME, e, FIELDS("controller", ctrl, "path", path, "file", file, "value", val),
         "cannot write '%s' to %s", val, file);
}

static void make_dir(const char *dir)
{
    if (mkdir(dir, 0755) == 0 || (errno == EEXIST && is_dir(dir)))
        return;
    fail(RC_RUNTIME, errno, FIELDS("path", dir), "cannot create cgroup %s", dir);
}

static void enable_v2(const char *dir, const bool need[N_CORE])
{
    char f[PATH_MAX], cur[512], add[128] = "";
    path_join(f, sizeof f, dir, "cgroup.subtree_control");
    if (read_text(f, cur, sizeof cur) < 0)
        fail(RC_RUNTIME, errno, FIELDS("path", dir), "cannot read %s", f);
    for (size_t i = 0; i < N_CORE; i++)
        if (need[i] && !word_in(cur, core_ctrls[i])) {
            size_t len = strlen(add);
            snprintf(add + len, sizeof add - len, "%s+%s", len ? " " : "", core_ctrls[i]);
        }
    if (!add[0])
        return;
    if (write_text(f, add) != 0) {
        int e = errno;
        fail(RC_RUNTIME, e, FIELDS("path", dir, "file", f, "value", add),
             "cannot enable controllers '%s' in %s%s", add, f,
             e == EBUSY ? " (the cgroup has member processes: cgroup v2 allows controllers "
                          "only in cgroups without processes)" : "");
    }
}

static void apply_v2(const struct cg *cg, const char *path, const struct limits *l)
{
    bool need[N_CORE] = {false};
    for (int k = 0; k < K_COUNT; k++)
        if (l->set[k])
            for (size_t i = 0; i < N_CORE; i++)
                if (strcmp(key_ctrl[k], core_ctrls[i]) == 0)
                    need[i] = true;

    char f[PATH_MAX], avail[512];
    path_join(f, sizeof f, cg->root, "cgroup.controllers");
    if (read_text(f, avail, sizeof avail) < 0)
        fail(RC_RUNTIME, errno, FIELDS("root", cg->root), "cannot read %s", f);
    for (size_t i = 0; i < N_CORE; i++)
        if (need[i] && !word_in(avail, core_ctrls[i]))
            fail(RC_RUNTIME, 0, FIELDS("controller", core_ctrls[i], "root", cg->root),
                 "cgroup controller '%s' is not available (cgroup v2 at %s: not in "
                 "cgroup.controllers '%s')", core_ctrls[i], cg->root, avail);

    char cur[PATH_MAX], comps[PATH_MAX];
    snprintf(cur, sizeof cur, "%s", cg->root);
    snprintf(comps, sizeof comps, "%s", path);
    for (char *save = NULL, *c = strtok_r(comps, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
        enable_v2(cur, need);
        char next[PATH_MAX];
        path_join(next, sizeof next, cur, c);
        make_dir(next);
        memcpy(cur, next, sizeof cur);
    }

    char val[64];
    if (l->set[K_CPU_MAX]) {
        char q[32];
        fmt_limit(q, sizeof q, l->quota);
        if (l->period_set)
            snprintf(val, sizeof val, "%s %llu", q, l->period);
        else
            snprintf(val, sizeof val, "%s", q);
        path_join(f, sizeof f, cur, "cpu.max");
        write_or_fail(f, val, "cpu", path);
    }
    if (l->set[K_CPU_WEIGHT]) {
        snprintf(val, sizeof val, "%llu", l->weight);
        path_join(f, sizeof f, cur, "cpu.weight");
        write_or_fail(f, val, "cpu", path);
    }
    if (l->set[K_MEM_MAX]) {
        fmt_limit(val, sizeof val, l->mem_max);
        path_join(f, sizeof f, cur, "memory.max");
        write_or_fail(f, val, "memory", path);
    }
    if (l->set[K_MEM_HIGH]) {
        fmt_limit(val, sizeof val, l->mem_high);
        path_join(f, sizeof f, cur, "memory.high");
        write_or_fail(f, val, "memory", path);
    }
    if (l->set[K_PIDS_MAX]) {
        fmt_limit(val, sizeof val, l->pids_max);
        path_join(f, sizeof f, cur, "pids.max");
        write_or_fail(f, val, "pids", path);
    }
    if (l->set[K_CPUSET_CPUS]) {
        path_join(f, sizeof f, cur, "cpuset.cpus");
        write_or_fail(f, l->cpus, "cpuset", path);
    }
}

/* A new v1 cpuset cgroup starts with empty cpus and mems, and no task can
 * join it: inherit both from the parent where they are empty. */
static void cpuset_inherit(const char *parent, const char *dir, const char *path)
{
    static const char *const files[] = {"cpuset.cpus", "cpuset.mems"};
    for (size_t i = 0; i < 2; i++) {
        char pf[PATH_MAX], df[PATH_MAX], cur[256], val[256];
        path_join(df, sizeof df, dir, files[i]);
        if (read_text(df, cur, sizeof cur) > 0)
            continue;
        path_join(pf, sizeof pf, parent, files[i]);
        if (read_text(pf, val, sizeof val) <= 0)
            continue;
        write_or_fail(df, val, "cpuset", path);
    }
}

static void apply_v1(const struct cg *cg, const char *path, const struct limits *l)
{
    for (int k = 0; k < K_COUNT; k++)
        if (l->set[k] && !v1_has(cg, key_ctrl[k]))
            fail(RC_RUNTIME, 0, FIELDS("controller", key_ctrl[k], "root", cg->root),
                 "cgroup controller '%s' is not available (cgroup v1: no hierarchy mounted at %s/%s)",
                 key_ctrl[k], cg->root, key_ctrl[k]);

    /* create the slice in every core hierarchy that is mounted */
    for (size_t i = 0; i < N_CORE; i++) {
        if (!v1_has(cg, core_ctrls[i]))
            continue;
        bool cpuset = strcmp(core_ctrls[i], "cpuset") == 0;
        char cur[PATH_MAX], comps[PATH_MAX];
        path_join(cur, sizeof cur, cg->root, core_ctrls[i]);
        snprintf(comps, sizeof comps, "%s", path);
        for (char *save = NULL, *c = strtok_r(comps, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
            char next[PATH_MAX];
            path_join(next, sizeof next, cur, c);
            make_dir(next);
            if (cpuset)
                cpuset_inherit(cur, next, path);
            memcpy(cur, next, sizeof cur);
        }
    }

    char dir[PATH_MAX], h[PATH_MAX], f[PATH_MAX], val[64];
#define V1_FILE(ctrl, name)                          \
    do {                                             \
        path_join(h, sizeof h, cg->root, ctrl);      \
        path_join(dir, sizeof dir, h, path);         \
        path_join(f, sizeof f, dir, name);           \
    } while (0)
    if (l->set[K_CPU_MAX]) {
        if (l->period_set) {
            snprintf(val, sizeof val, "%llu", l->period);
            V1_FILE("cpu", "cpu.cfs_period_us");
            write_or_fail(f, val, "cpu", path);
        }
        snprintf(val, sizeof val, "%lld", l->quota); /* UNLIMITED is -1 in v1 too */
        V1_FILE("cpu", "cpu.cfs_quota_us");
        write_or_fail(f, val, "cpu", path);
    }
    if (l->set[K_CPU_WEIGHT]) {
        unsigned long long shares = (l->weight * 1024 + 50) / 100;
        snprintf(val, sizeof val, "%llu", shares < 2 ? 2 : shares);
        V1_FILE("cpu", "cpu.shares");
        write_or_fail(f, val, "cpu", path);
    }
    if (l->set[K_MEM_MAX]) {
        snprintf(val, sizeof val, "%lld", l->mem_max);
        V1_FILE("memory", "memory.limit_in_bytes");
        write_or_fail(f, val, "memory", path);
    }
    if (l->set[K_MEM_HIGH]) {
        snprintf(val, sizeof val, "%lld", l->mem_high);
        V1_FILE("memory", "memory.soft_limit_in_bytes");
        write_or_fail(f, val, "memory", path);
    }
    if (l->set[K_PIDS_MAX]) {
        fmt_limit(val, sizeof val, l->pids_max);
        V1_FILE("pids", "pids.max");
        write_or_fail(f, val, "pids", path);
    }
    if (l->set[K_CPUSET_CPUS]) {
        V1_FILE("cpuset", "cpuset.cpus");
        write_or_fail(f, l->cpus, "cpuset", path);
    }
#undef V1_FILE
}

/* ---- rm ---------------------------------------------------------------------------- */
static void remove_tree(const char *dir)
{
    /* On a real cgroupfs the interface files vanish with rmdir; a plain
     * directory tree (test fixtures) needs them removed first. */
    bool plain = !is_cgroupfs(dir);
    DIR *d = opendir(dir);
    if (!d)
        fail(RC_RUNTIME, errno, FIELDS("path", dir), "cannot open cgroup %s", dir);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char sub[PATH_MAX];
        path_join(sub, sizeof sub, dir, e->d_name);
        struct stat st;
        if (lstat(sub, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode))
            remove_tree(sub);
        else if (plain && unlink(sub) != 0)
            fail(RC_RUNTIME, errno, FIELDS("path", sub), "cannot remove %s", sub);
    }
    closedir(d);
    if (rmdir(dir) != 0)
        fail(RC_RUNTIME, errno, FIELDS("path", dir), "cannot remove cgroup %s", dir);
}

static int cmd_rm(const struct cg *cg, const char *path)
{
    char dirs[MAX_HIER][PATH_MAX];
    const char *names[MAX_HIER];
    int n = 0;
    if (cg->version == 2) {
        path_join(dirs[0], sizeof dirs[0], cg->root, path);
        if (is_dir(dirs[0]))
            names[n++] = "unified";
    } else {
        for (int k = 0; k < cg->nhier; k++) {
            char h[PATH_MAX];
            path_join(h, sizeof h, cg->root, cg->hier[k]);
            path_join(dirs[n], sizeof dirs[n], h, path);
            if (is_dir(dirs[n]))
                names[n++] = cg->hier[k];
        }
        if (cg->hybrid[0] && n < MAX_HIER) {
            char h[PATH_MAX];
            path_join(h, sizeof h, cg->root, cg->hybrid);
            path_join(dirs[n], sizeof dirs[n], h, path);
            if (is_dir(dirs[n]))
                names[n++] = cg->hybrid;
        }
    }
    struct pidset s = {NULL, 0, 0};
    for (int i = 0; i < n; i++)
        collect_procs(dirs[i], &s);
    size_t members = pidset_unique(&s);
    free(s.v);
    if (members > 0) {
        char num[32];
        snprintf(num, sizeof num, "%zu", members);
        fail(RC_RUNTIME, 0, FIELDS("path", path, "members", num),
             "slice '%s' has %zu member process%s; not removing it", path, members,
             members == 1 ? "" : "es");
    }
    for (int i = 0; i < n; i++)
        remove_tree(dirs[i]);

    json_t j;
    json_init(&j, stdout);
    json_obj_begin(&j, NULL);
    json_str(&j, "path", path);
    json_int(&j, "version", cg->version);
    json_bool(&j, "existed", n > 0);
    json_bool(&j, "removed", n > 0);
    json_arr_begin(&j, "hierarchies");
    for (int i = 0; i < n; i++)
        json_str(&j, NULL, names[i]);
    json_arr_end(&j);
    json_obj_end(&j);
    return json_finish(&j) == 0 ? RC_OK : RC_RUNTIME;
}

/* ---- command ---------------------------------------------------------------------- */
int cmd_slice(int argc, char **argv)
{
    if (argc < 2)
        fail(RC_USAGE, 0, FIELDS("usage", slice_usage), "slice: missing subcommand or PATH");
    const char *sub = argv[0];
    bool is_apply = strcmp(sub, "apply") == 0, is_show = strcmp(sub, "show") == 0,
         is_rm = strcmp(sub, "rm") == 0;
    if (!is_apply && !is_show && !is_rm)
        fail(RC_USAGE, 0, FIELDS("usage", slice_usage), "slice: unknown subcommand '%s'", sub);
    if (is_rm && argc != 2)
        fail(RC_USAGE, 0, FIELDS("usage", slice_usage), "slice rm takes exactly one PATH");
    if (is_show) {
        for (int i = 1; i < argc; i++)
            validate_path(argv[i]);
    } else {
        validate_path(argv[1]);
    }
    const char *path = argv[1];

    struct limits l;
    memset(&l, 0, sizeof l);
    if (is_apply)
        for (int i = 2; i < argc; i++)
            parse_kv(argv[i], &l);

    struct cg cg;
    detect(&cg);
    if (is_rm)
        return cmd_rm(&cg, path);
    if (is_apply) {
        if (cg.version == 2)
            apply_v2(&cg, path, &l);
        else
            apply_v1(&cg, path, &l);
    }

    json_t j;
    json_init(&j, stdout);
    struct observed o;
    if (is_show && argc > 2) {
        json_obj_begin(&j, NULL);
        json_int(&j, "version", cg.version);
        json_obj_begin(&j, "slices");
        for (int i = 1; i < argc; i++) {
            observe(&cg, argv[i], &o);
            print_slice(&j, argv[i], &cg, argv[i], &o, NULL);
        }
        json_obj_end(&j);
        json_obj_end(&j);
        return json_finish(&j) == 0 ? RC_OK : RC_RUNTIME;
    }
    /* apply prints the observed state after writing, plus the keys written */
    observe(&cg, path, &o);
    print_slice(&j, NULL, &cg, path, &o, is_apply ? &l : NULL);
    return json_finish(&j) == 0 ? RC_OK : RC_RUNTIME;
}

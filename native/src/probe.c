/* reflink-probe: can a file in SRC_DIR be reflink-cloned (FICLONE) into
 * DST_DIR?  Answered by trying it on two anonymous files, so that `provision
 * plan` can say in advance whether a VM disk will be a reflink clone or a
 * qcow2 overlay.  statfs alone cannot tell: XFS made without reflink=1, btrfs
 * subvolumes (different st_dev, yet cloneable) and kernels that refuse
 * clones across mounts all look alike from the outside.
 *
 *   provision-helper reflink-probe [--nearest] SRC_DIR DST_DIR
 *
 * --nearest: a directory that does not exist yet (a pool the same apply will
 * make) is answered for its nearest existing parent, where it would be made;
 * the JSON then also names the directories probed (src_dir, dst_dir).
 *
 * The files are O_TMPFILE: never linked, freed on close, so nothing is left
 * in either directory, even after a SIGKILL.  Exit 0 whenever the question
 * could be answered (yes or no); errors (missing directory, permission
 * denied, read-only filesystem, I/O) exit 1 naming the path.
 *
 * "no" is decided on the same errnos on which `clone --method auto` falls
 * back to a copy; any other FICLONE error would make clone fail too, so it is
 * an error here as well. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdalign.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "helper.h"

#ifndef FICLONE
#define FICLONE _IOW(0x94, 9, int)
#endif

#define PROBE_BLOCK ((size_t)64 << 10)

static const char probe_usage[] = "provision-helper reflink-probe [--nearest] SRC_DIR DST_DIR";

static const struct {
    unsigned long magic;
    const char *name;
} fs_names[] = {
    {0x58465342UL, "xfs"},
    {0x9123683eUL, "btrfs"},
    {0xef53UL, "ext4"}, /* ext2, ext3 and ext4 share one magic */
    {0x01021994UL, "tmpfs"},
    {0x794c7630UL, "overlay"},
    {0x6969UL, "nfs"},
};

/* name: a buffer of at least 16 bytes ("0x" + 8 hex digits) */
static void fs_name(unsigned long magic, char *name, size_t cap)
{
    for (size_t i = 0; i < sizeof fs_names / sizeof fs_names[0]; i++) {
        if (fs_names[i].magic == magic) {
            snprintf(name, cap, "%s", fs_names[i].name);
            return;
        }
    }
    snprintf(name, cap, "0x%lx", magic);
}

struct probe_dir {
    const char *path;
    char parent[PATH_MAX]; /* with --nearest: the existing parent probed instead */
    int fd; /* O_PATH: needs no read permission on the directory itself */
    dev_t dev;
    char fs[16];
};

/* The path without its last component ("/a/b/" -> "/a", "/a" -> "/",
 * "a" -> "."), in place; false when there is nothing left to strip. */
static bool strip_last(char *p)
{
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/')
        p[--n] = '\0';
    char *slash = strrchr(p, '/');
    if (slash == NULL) {
        if (strcmp(p, ".") == 0)
            return false;
        strcpy(p, ".");
    } else if (slash == p) {
        if (p[1] == '\0')
            return false;
        p[1] = '\0';
    } else {
        *slash = '\0';
    }
    return true;
}

static void open_dir(struct probe_dir *d, const char *role, bool nearest)
{
    d->fd = open(d->path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (d->fd < 0 && errno == ENOENT && nearest && strlen(d->path) < sizeof d->parent) {
        strcpy(d->parent, d->path);
        while (d->fd < 0 && errno == ENOENT && strip_last(d->parent))
            d->fd = open(d->parent, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (d->fd >= 0)
            d->path = d->parent;
    }
    if (d->fd < 0) {
        int e = errno;
        if (e == ENOTDIR) /* like clone's "not a regular file": no errno text */
            fail(RC_RUNTIME, 0, FIELDS("path", d->path), "reflink-probe: %s '%s' is not a directory",
                 role, d->path);
        fail(RC_RUNTIME, e, FIELDS("path", d->path), "reflink-probe: cannot open %s '%s'", role,
             d->path);
    }
    struct stat st;
    struct statfs sfs;
    if (fstat(d->fd, &st) != 0)
        fail(RC_RUNTIME, errno, FIELDS("path", d->path), "reflink-probe: cannot stat '%s'", d->path);
    if (fstatfs(d->fd, &sfs) != 0)
        fail(RC_RUNTIME, errno, FIELDS("path", d->path), "reflink-probe: cannot statfs '%s'",
             d->path);
    d->dev = st.st_dev;
    /* f_type is a signed word; magics are 32-bit */
    fs_name((unsigned long)(uint32_t)sfs.f_type, d->fs, sizeof d->fs);
}

/* An anonymous file in d, or -1 when the filesystem has no O_TMPFILE (old
 * kernels say EISDIR: they read O_TMPFILE as O_DIRECTORY).  Other errors
 * fail. */
static int open_tmpfile(const struct probe_dir *d)
{
    int fd = openat(d->fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0)
        return fd;
    int e = errno;
    if (e == EOPNOTSUPP || e == EISDIR || e == EINVAL)
        return -1;
    fail(RC_RUNTIME, e, FIELDS("path", d->path), "reflink-probe: cannot create a file in '%s'",
         d->path);
}

static void write_block(int fd, const struct probe_dir *d)
{
    static alignas(4096) unsigned char block[PROBE_BLOCK];
    memset(block, 0xa5, sizeof block); /* data, not zeros: a real extent */
    size_t off = 0;
    while (off < sizeof block) {
        ssize_t n = pwrite(fd, block + off, sizeof block - off, (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fail(RC_RUNTIME, errno, FIELDS("path", d->path),
                 "reflink-probe: cannot write a test file in '%s'", d->path);
        }
        off += (size_t)n;
    }
}

/* The errnos on which clone --method auto falls back to a copy. */
static bool clone_unsupported(int err)
{
    return err == EOPNOTSUPP || err == EXDEV || err == EINVAL || err == ENOTTY || err == ENOSYS ||
           err == EPERM || err == ETXTBSY;
}

static int print_answer(const struct probe_dir *src, const struct probe_dir *dst, bool reflink,
                        bool same_fs, const char *reason, bool nearest)
{
    json_t j;
    json_init(&j, stdout);
    json_obj_begin(&j, NULL);
    json_bool(&j, "reflink", reflink);
    json_str(&j, "src_fs", src->fs);
    json_str(&j, "dst_fs", dst->fs);
    json_bool(&j, "same_fs", same_fs);
    json_str(&j, "reason", reason);
    if (nearest) {
        json_str(&j, "src_dir", src->path);
        json_str(&j, "dst_dir", dst->path);
    }
    json_obj_end(&j);
    return json_finish(&j) == 0 ? RC_OK : RC_RUNTIME;
}

int cmd_reflink_probe(int argc, char **argv)
{
    const char *pos[2];
    int npos = 0;
    bool opts_done = false, nearest = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!opts_done && strcmp(a, "--") == 0) {
            opts_done = true;
            continue;
        }
        if (!opts_done && strcmp(a, "--nearest") == 0) {
            nearest = true;
            continue;
        }
        if (!opts_done && a[0] == '-' && a[1] != '\0')
            fail(RC_USAGE, 0, FIELDS("option", a, "usage", probe_usage),
                 "reflink-probe: unknown option '%s'", a);
        if (npos == 2)
            fail(RC_USAGE, 0, FIELDS("usage", probe_usage),
                 "reflink-probe: too many arguments (want SRC_DIR DST_DIR)");
        pos[npos++] = a;
    }
    if (npos != 2)
        fail(RC_USAGE, 0, FIELDS("usage", probe_usage), "reflink-probe: missing SRC_DIR or DST_DIR");
    if (!*pos[0] || !*pos[1])
        fail(RC_USAGE, 0, FIELDS("usage", probe_usage), "reflink-probe: empty path");

    struct probe_dir src = {.path = pos[0]}, dst = {.path = pos[1]};
    open_dir(&src, "source directory", nearest);
    open_dir(&dst, "destination directory", nearest);
    /* btrfs gives each subvolume its own st_dev: a clone that works proves
     * one filesystem even when the devices differ */
    bool same_fs = src.dev == dst.dev;
    char reason[128];

    int sfd = open_tmpfile(&src), dfd = -1;
    if (sfd >= 0) {
        write_block(sfd, &src);
        dfd = open_tmpfile(&dst);
    }
    if (dfd < 0) {
        if (sfd >= 0)
            close(sfd);
        close(dst.fd);
        close(src.fd);
        snprintf(reason, sizeof reason, "O_TMPFILE unsupported on %s", sfd < 0 ? src.fs : dst.fs);
        return print_answer(&src, &dst, false, same_fs, reason, nearest);
    }

    bool reflink = ioctl(dfd, FICLONE, sfd) == 0;
    int e = reflink ? 0 : errno;
    close(dfd);
    close(sfd);
    close(dst.fd);
    close(src.fd);
    if (reflink)
        return print_answer(&src, &dst, true, true, "FICLONE works", nearest);
    if (!clone_unsupported(e))
        fail(RC_RUNTIME, e, FIELDS("src", src.path, "dst", dst.path),
             "reflink-probe: FICLONE from '%s' to '%s' failed", src.path, dst.path);

    if (!same_fs)
        snprintf(reason, sizeof reason, "different filesystems");
    else if (e == EXDEV) /* older kernels refuse clones across mounts */
        snprintf(reason, sizeof reason, "different mounts of one %s filesystem", src.fs);
    else if (strcmp(src.fs, "xfs") == 0 && (e == EOPNOTSUPP || e == EINVAL))
        snprintf(reason, sizeof reason, "xfs without reflink support");
    else if (e == EOPNOTSUPP || e == ENOTTY || e == ENOSYS || e == EINVAL)
        snprintf(reason, sizeof reason, "%s has no reflink", src.fs);
    else
        snprintf(reason, sizeof reason, "FICLONE refused on %s: %s", src.fs, strerror(e));
    return print_answer(&src, &dst, false, same_fs, reason, nearest);
}

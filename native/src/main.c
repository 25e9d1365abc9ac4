/* provision-helper: copy-on-write clones and cgroup slices for provision.
 *
 *   provision-helper clone [--size BYTES] [--method auto|reflink|copy] SRC DST
 *   provision-helper slice apply PATH key=value...
 *   provision-helper slice show PATH...
 *   provision-helper slice rm PATH
 *   provision-helper reflink-probe [--nearest] SRC_DIR DST_DIR
 *   provision-helper version
 */
#define _GNU_SOURCE
#include <string.h>

#include "helper.h"

static const char usage_text[] =
    "usage: provision-helper clone [--size BYTES] [--method auto|reflink|copy] SRC DST\n"
    "       provision-helper slice apply PATH key=value...\n"
    "       provision-helper slice show PATH...\n"
    "       provision-helper slice rm PATH\n"
    "       provision-helper reflink-probe [--nearest] SRC_DIR DST_DIR\n"
    "       provision-helper version\n";

static int cmd_version(void)
{
    json_t j;
    json_init(&j, stdout);
    json_obj_begin(&j, NULL);
    json_str(&j, "version", HELPER_VERSION);
    json_arr_begin(&j, "features");
    static const char *const features[] = {
        "clone", "reflink", "sparse-copy", "copy_file_range", "atomic-rename",
        "slice", "cgroup-v1", "cgroup-v2", "slice-show-many", "reflink-probe",
    };
    for (size_t i = 0; i < sizeof features / sizeof features[0]; i++)
        json_str(&j, NULL, features[i]);
    json_arr_end(&j);
    json_obj_end(&j);
    return json_finish(&j) == 0 ? RC_OK : RC_RUNTIME;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        fail(RC_USAGE, 0, FIELDS("usage", usage_text), "missing command");
    const char *cmd = argv[1];
    if (strcmp(cmd, "clone") == 0)
        return cmd_clone(argc - 2, argv + 2);
    if (strcmp(cmd, "slice") == 0)
        return cmd_slice(argc - 2, argv + 2);
    if (strcmp(cmd, "reflink-probe") == 0)
        return cmd_reflink_probe(argc - 2, argv + 2);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        if (argc != 2)
            fail(RC_USAGE, 0, NULL, "version takes no arguments");
        return cmd_version();
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        fputs(usage_text, stderr);
        json_t j;
        json_init(&j, stdout);
        json_obj_begin(&j, NULL);
        json_str(&j, "usage", usage_text);
        json_obj_end(&j);
        return json_finish(&j) == 0 ? RC_OK : RC_RUNTIME;
    }
    fail(RC_USAGE, 0, FIELDS("usage", usage_text), "unknown command '%s'", cmd);
}

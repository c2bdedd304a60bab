/* craftctl: craft's command-line client and tool.
 *
 *   craftctl wal check DIR   is the data directory healthy?
 *   craftctl wal dump DIR    every file and record, one a line
 *
 * Exit codes of `wal check`: 0 healthy; 3 a torn tail that recovery cuts
 * at the next start (the normal trace of a crash); 1 damaged: a node
 * refuses to start on it; 2 usage or I/O errors. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "craft/storage.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: craftctl wal check DIR\n"
            "       craftctl wal dump DIR\n"
            "\n"
            "  wal check DIR  says whether a node can start on the data\n"
            "                 directory DIR; exit 0 healthy, 3 a torn tail\n"
            "                 that recovery cuts, 1 damaged, 2 error\n"
            "  wal dump DIR   prints every file and record of DIR\n");
}

static void print_line(void *data, const char *text)
{
    (void)data;
    printf("%s\n", text);
}

static void summary(const char *dir, const struct cr_recovery *rec)
{
    printf("%s: term=%" PRIu64 " vote=%" PRIu64 " commit=%" PRIu64
           " cluster=%" PRIu64,
           dir, rec->hs.term, rec->hs.vote, rec->hs.commit, rec->cluster_id);
    if (rec->n > 0) {
        printf(" log=%" PRIu64 "..%" PRIu64 " (%u entries)", rec->first,
               rec->first + rec->n - 1, rec->n);
    } else {
        printf(" log=empty");
    }
    if (rec->has_snapshot) {
        printf(" snapshot=%" PRIu64 "/%" PRIu64 " (%" PRIu64 " bytes)",
               rec->snapshot.index, rec->snapshot.term, rec->snapshot_size);
    }
    printf("\n");
}

static int wal(int argc, char **argv)
{
    struct cr_recovery rec;
    char errmsg[CR_ERRMSG_SIZE] = "";
    bool dump;
    int rv;
    if (argc != 3 ||
        (strcmp(argv[1], "check") != 0 && strcmp(argv[1], "dump") != 0)) {
        usage(stderr);
        return 2;
    }
    dump = strcmp(argv[1], "dump") == 0;
    rv = cr_storage_inspect(argv[2], NULL, dump ? print_line : NULL, NULL, &rec,
                            errmsg);
    if (rv == CR_ECORRUPT) {
        fprintf(dump ? stdout : stderr, "%s: damaged: %s\n", argv[2], errmsg);
        return 1;
    }
    if (rv != 0) {
        fprintf(stderr, "craftctl: %s: %s\n", argv[2],
                errmsg[0] != '\0' ? errmsg : cr_strerror(rv));
        return 2;
    }
    if (rec.fresh) {
        printf("%s: empty: no craft data\n", argv[2]);
    } else {
        summary(argv[2], &rec);
    }
    if (rec.warning[0] != '\0') {
        printf("%s: warning: %s\n", argv[2], rec.warning);
    }
    cr_recovery_free(&rec, NULL);
    if (rec.torn) {
        printf("%s: torn tail: recovery cuts it at the next start\n", argv[2]);
        return 3;
    }
    if (!dump) {
        printf("%s: healthy\n", argv[2]);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "wal") == 0) {
        return wal(argc - 1, argv + 1);
    }
    if (argc >= 2 &&
        (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    usage(stderr);
    return 2;
}

/* Private to src/storage: on-disk formats and the pieces the storage's
 * files share. All integers on disk are little-endian. */
#ifndef CRAFT_STORAGE_IMPL_H
#define CRAFT_STORAGE_IMPL_H

#include <stdarg.h>

#include "craft/storage.h"

/* Segment header, 32 bytes:
 *   0 "CRWALSEG"  8 u32 version  12 u32 CRC32C of bytes 0-11 and 16-31
 *  16 u64 segment sequence number  24 u64 zero */
#define CR__SEG_MAGIC "CRWALSEG"
/* Version 2: records in batches. Version 1 (bare records) is refused. */
#define CR__SEG_VERSION 2
#define CR__SEG_HEADER 32

/* Record header, 32 bytes, then the payload, then zeros to a multiple of 8:
 *   0 u32 CRC32C of bytes 4-31 and the payload
 *   4 u32 payload length  8 u8 record type  9 u8 entry type
 *  10 u16 zero  12 u32 zero  16 u64 index  24 u64 term
 *
 * Records are written in batches: each group commit writes, in each
 * segment it touches, one batch header record (CR__REC_BATCH, no payload;
 * index: the length of the body, term: its CRC32C) followed by the body,
 * whole records. The writer starts a batch only once the one before it is
 * durable, so a crash can tear only the last batch, in any order within it
 * (page write-back is not ordered): a bad batch followed by a valid one is
 * damage, never the trace of a crash. */
#define CR__REC_HEADER 32

enum cr__rec_type {
    CR__REC_ENTRY = 1,    /* index, term, entry type, payload */
    CR__REC_COMMIT = 2,   /* index: the commit index */
    CR__REC_TRUNCATE = 3, /* index: drop the entries from here on */
    CR__REC_RESET = 4,    /* index, term: a snapshot replaced the log */
    CR__REC_BATCH = 5,    /* index: body length, term: body CRC32C */
};

struct cr__rec
{
    enum cr__rec_type type;
    enum cr_entry_type etype;
    uint32_t len;
    cr_index index;
    cr_term term;
    const uint8_t *payload;
    size_t size; /* bytes it takes, padding included (less if cut) */
};

/* Metadata file, 64 bytes:
 *   0 "CRMETA01"  8 u64 sequence  16 u64 term  24 u64 vote
 *  32 u64 cluster id  40 u32 version  44 u32 CRC32C of bytes 0-43
 *  48 zeros */
#define CR__META_MAGIC "CRMETA01"
#define CR__META_SIZE 64

struct cr__meta
{
    uint64_t seq;
    cr_term term;
    cr_id vote;
    uint64_t cluster_id;
};

/* Snapshot file header, 64 bytes plus the encoded configuration:
 *   0 "CRSNAP01"  8 u32 version  12 u32 header length (with config)
 *  16 u64 index  24 u64 term  32 u64 config index  40 u64 data size
 *  48 u32 data CRC32C  52 u32 config length
 *  56 u32 CRC32C of the header with this field zero  60 u32 zero
 *  64 the configuration (cr_config_encode) */
#define CR__SNAP_MAGIC "CRSNAP01"
#define CR__SNAP_FIXED 64

static inline size_t cr__align8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

void cr__put64(uint8_t *p, uint64_t v);
void cr__put32(uint8_t *p, uint32_t v);
uint64_t cr__get64(const uint8_t *p);
uint32_t cr__get32(const uint8_t *p);

/* Encodes a record at buf (room for cr__rec_size(len)); returns its size. */
size_t cr__rec_encode(uint8_t *buf,
                      enum cr__rec_type type,
                      enum cr_entry_type etype,
                      cr_index index,
                      cr_term term,
                      const void *payload,
                      uint32_t len);
static inline size_t cr__rec_size(size_t len)
{
    return CR__REC_HEADER + cr__align8(len);
}

enum cr__rec_status {
    CR__REC_OK = 0,
    CR__REC_END, /* zeros to the end, or nothing left */
    CR__REC_BAD, /* a header or payload that fails its checks */
};

/* Decodes the record at buf[0, avail). A record whose padding is cut off
 * by the end of the buffer is whole (rec->size says how much is there). */
enum cr__rec_status cr__rec_decode(const uint8_t *buf,
                                   size_t avail,
                                   struct cr__rec *rec,
                                   const char **why);

/* Encodes a batch header for body[0, len). */
size_t cr__batch_encode(uint8_t *buf, const void *body, size_t len);
/* Whether buf[0, avail) starts with a batch header whose body is whole
 * and matches its checksum. */
bool cr__batch_valid(const uint8_t *buf, size_t avail);

void cr__seg_header_encode(uint8_t *buf, uint64_t seq);
/* 0, CR_ECORRUPT, or CR_EINVAL for a valid header of another version
 * (*version says which). */
int cr__seg_header_decode(const uint8_t *buf,
                          size_t len,
                          uint64_t *seq,
                          uint32_t *version);

void cr__meta_encode(uint8_t *buf, const struct cr__meta *m);
int cr__meta_decode(const uint8_t *buf, size_t len, struct cr__meta *m);

size_t cr__snap_header_size(const struct cr_snapshot_meta *meta);
void cr__snap_header_encode(uint8_t *buf,
                            const struct cr_snapshot_meta *meta,
                            uint64_t size,
                            uint32_t crc);
/* Decodes the fixed part: *header_len says how much to read in all. */
int cr__snap_header_peek(const uint8_t *buf, size_t len, size_t *header_len);
int cr__snap_header_decode(const uint8_t *buf,
                           size_t len,
                           struct cr_snapshot_meta *meta,
                           uint64_t *size,
                           uint32_t *crc);

/* File names. */
#define CR__WAL_PREFIX "wal-"
#define CR__SNAP_PREFIX "snapshot-"
#define CR__TMP_SUFFIX ".tmp"
void cr__seg_name(char *buf, size_t len, uint64_t seq);
void cr__snap_name(char *buf, size_t len, cr_index index, cr_term term);
int cr__join(char *buf, const char *dir, const char *name);

/* printf into a CR_ERRMSG_SIZE buffer (NULL is fine). */
void cr__errf(char *errmsg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Reads exactly len bytes at off: 0, -EIO for a short read, -errno. */
int cr__read_full(const struct cr_fs *fs,
                  int fd,
                  void *buf,
                  size_t len,
                  uint64_t off);
int cr__write_full(const struct cr_fs *fs,
                   int fd,
                   const void *buf,
                   size_t len,
                   uint64_t off);

/* ---------------------------------------------------------------------------
 * Recovery (recovery.c), shared by cr_storage_open and cr_storage_inspect
 * ------------------------------------------------------------------------- */

/* One segment as recovery found it. */
struct cr__segment
{
    uint64_t seq;
    uint64_t size;      /* file size */
    uint64_t end;       /* offset after the last valid record */
    cr_index max_index; /* highest entry index in it, 0 if none */
    bool has_reset;     /* holds a snapshot install */
};

struct cr__scan
{
    const struct cr_fs *fs;
    const struct cr_alloc *alloc;
    const char *dir;
    bool read_only;
    void (*line)(void *data, const char *text);
    void *line_data;
    struct cr__segment *segs;
    unsigned n_segs;
    struct cr__meta meta;
    unsigned meta_slot; /* 1 or 2: the file holding `meta`; 0: none */
};

int cr__recover(struct cr__scan *scan, struct cr_recovery *rec, char *errmsg);
void cr__scan_free(struct cr__scan *scan);

#endif /* CRAFT_STORAGE_IMPL_H */

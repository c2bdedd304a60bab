/* On-disk formats: records, segment headers, metadata and snapshot
 * headers. Everything read back is checked before it is believed. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <isa-l/crc.h>

#include "storage_impl.h"

uint32_t cr_crc32c(uint32_t crc, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    /* ISA-L takes an int length and the raw register value. */
    crc = ~crc;
    while (len > 0) {
        int chunk = len > (1u << 30) ? 1 << 30 : (int)len;
        crc = crc32_iscsi((unsigned char *)(uintptr_t)p, chunk, crc);
        p += chunk;
        len -= (size_t)chunk;
    }
    return ~crc;
}

void cr__put64(uint8_t *p, uint64_t v)
{
    for (unsigned i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

void cr__put32(uint8_t *p, uint32_t v)
{
    for (unsigned i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

uint64_t cr__get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < 8; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

uint32_t cr__get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (unsigned i = 0; i < 4; i++) {
        v |= (uint32_t)p[i] << (8 * i);
    }
    return v;
}

size_t cr__rec_encode(uint8_t *buf,
                      enum cr__rec_type type,
                      enum cr_entry_type etype,
                      cr_index index,
                      cr_term term,
                      const void *payload,
                      uint32_t len)
{
    size_t size = cr__rec_size(len);
    memset(buf, 0, CR__REC_HEADER);
    cr__put32(buf + 4, len);
    buf[8] = (uint8_t)type;
    buf[9] = (uint8_t)etype;
    cr__put64(buf + 16, index);
    cr__put64(buf + 24, term);
    if (len > 0) {
        memcpy(buf + CR__REC_HEADER, payload, len);
    }
    memset(buf + CR__REC_HEADER + len, 0, size - CR__REC_HEADER - len);
    cr__put32(buf, cr_crc32c(0, buf + 4, CR__REC_HEADER - 4 + len));
    return size;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != 0) {
            return false;
        }
    }
    return true;
}

enum cr__rec_status cr__rec_decode(const uint8_t *buf,
                                   size_t avail,
                                   struct cr__rec *rec,
                                   const char **why)
{
    uint32_t len;
    size_t size;
    if (avail < CR__REC_HEADER) {
        if (all_zero(buf, avail)) {
            *why = "zeros";
            return CR__REC_END;
        }
        *why = "a partial record header";
        return CR__REC_BAD;
    }
    if (all_zero(buf, CR__REC_HEADER)) {
        *why = "zeros";
        return CR__REC_END;
    }
    len = cr__get32(buf + 4);
    if (len > avail - CR__REC_HEADER) {
        *why = "a record longer than the rest of the segment";
        return CR__REC_BAD;
    }
    if (cr__get32(buf) != cr_crc32c(0, buf + 4, CR__REC_HEADER - 4 + len)) {
        *why = "checksum mismatch";
        return CR__REC_BAD;
    }
    size = cr__rec_size(len);
    if (size > avail) {
        size = avail;
    }
    if (!all_zero(buf + CR__REC_HEADER + len, size - CR__REC_HEADER - len) ||
        buf[10] != 0 || buf[11] != 0 || cr__get32(buf + 12) != 0) {
        *why = "non-zero padding";
        return CR__REC_BAD;
    }
    rec->type = (enum cr__rec_type)buf[8];
    rec->etype = (enum cr_entry_type)buf[9];
    rec->len = len;
    rec->index = cr__get64(buf + 16);
    rec->term = cr__get64(buf + 24);
    rec->payload = buf + CR__REC_HEADER;
    rec->size = size;
    switch (rec->type) {
        case CR__REC_ENTRY:
            if (rec->index == 0 || rec->term == 0 ||
                (rec->etype != CR_ENTRY_COMMAND &&
                 rec->etype != CR_ENTRY_CONFIG &&
                 rec->etype != CR_ENTRY_NOOP)) {
                *why = "entry record with a bad index, term or type";
                return CR__REC_BAD;
            }
            return CR__REC_OK;
        case CR__REC_COMMIT:
        case CR__REC_TRUNCATE:
            if (len != 0 || rec->etype != 0) {
                *why = "commit or truncate record with a payload";
                return CR__REC_BAD;
            }
            return CR__REC_OK;
        case CR__REC_RESET:
            if (len != 0 || rec->etype != 0 || rec->index == 0 ||
                rec->term == 0) {
                *why = "bad snapshot install record";
                return CR__REC_BAD;
            }
            return CR__REC_OK;
        case CR__REC_BATCH:
            if (len != 0 || rec->etype != 0 || rec->index == 0 ||
                rec->term > UINT32_MAX) {
                *why = "bad batch header";
                return CR__REC_BAD;
            }
            return CR__REC_OK;
    }
    *why = "unknown record type";
    return CR__REC_BAD;
}

size_t cr__batch_encode(uint8_t *buf, const void *body, size_t len)
{
    return cr__rec_encode(buf, CR__REC_BATCH, 0, len, cr_crc32c(0, body, len),
                          NULL, 0);
}

bool cr__batch_valid(const uint8_t *buf, size_t avail)
{
    struct cr__rec r;
    const char *why;
    return cr__rec_decode(buf, avail, &r, &why) == CR__REC_OK &&
           r.type == CR__REC_BATCH && r.index <= avail - CR__REC_HEADER &&
           cr_crc32c(0, buf + CR__REC_HEADER, (size_t)r.index) == r.term;
}

void cr__seg_header_encode(uint8_t *buf, uint64_t seq)
{
    uint32_t crc;
    memset(buf, 0, CR__SEG_HEADER);
    memcpy(buf, CR__SEG_MAGIC, 8);
    cr__put32(buf + 8, CR__SEG_VERSION);
    cr__put64(buf + 16, seq);
    crc = cr_crc32c(0, buf, 12);
    crc = cr_crc32c(crc, buf + 16, 16);
    cr__put32(buf + 12, crc);
}

int cr__seg_header_decode(const uint8_t *buf,
                          size_t len,
                          uint64_t *seq,
                          uint32_t *version)
{
    uint32_t crc;
    if (len < CR__SEG_HEADER || memcmp(buf, CR__SEG_MAGIC, 8) != 0) {
        return CR_ECORRUPT;
    }
    crc = cr_crc32c(0, buf, 12);
    crc = cr_crc32c(crc, buf + 16, 16);
    if (crc != cr__get32(buf + 12)) {
        return CR_ECORRUPT;
    }
    *version = cr__get32(buf + 8);
    *seq = cr__get64(buf + 16);
    return *version == CR__SEG_VERSION ? 0 : CR_EINVAL;
}

void cr__meta_encode(uint8_t *buf, const struct cr__meta *m)
{
    memset(buf, 0, CR__META_SIZE);
    memcpy(buf, CR__META_MAGIC, 8);
    cr__put64(buf + 8, m->seq);
    cr__put64(buf + 16, m->term);
    cr__put64(buf + 24, m->vote);
    cr__put64(buf + 32, m->cluster_id);
    cr__put32(buf + 40, 1);
    cr__put32(buf + 44, cr_crc32c(0, buf, 44));
}

int cr__meta_decode(const uint8_t *buf, size_t len, struct cr__meta *m)
{
    if (len < CR__META_SIZE || memcmp(buf, CR__META_MAGIC, 8) != 0 ||
        cr__get32(buf + 40) != 1 ||
        cr__get32(buf + 44) != cr_crc32c(0, buf, 44) ||
        !all_zero(buf + 48, CR__META_SIZE - 48)) {
        return CR_ECORRUPT;
    }
    m->seq = cr__get64(buf + 8);
    m->term = cr__get64(buf + 16);
    m->vote = cr__get64(buf + 24);
    m->cluster_id = cr__get64(buf + 32);
    return m->seq == 0 ? CR_ECORRUPT : 0;
}

size_t cr__snap_header_size(const struct cr_snapshot_meta *meta)
{
    return CR__SNAP_FIXED + cr__align8(cr_config_encoded_size(&meta->config));
}

void cr__snap_header_encode(uint8_t *buf,
                            const struct cr_snapshot_meta *meta,
                            uint64_t size,
                            uint32_t crc)
{
    size_t clen = cr_config_encoded_size(&meta->config);
    size_t hlen = cr__snap_header_size(meta);
    memset(buf, 0, hlen);
    memcpy(buf, CR__SNAP_MAGIC, 8);
    cr__put32(buf + 8, 1);
    cr__put32(buf + 12, (uint32_t)hlen);
    cr__put64(buf + 16, meta->index);
    cr__put64(buf + 24, meta->term);
    cr__put64(buf + 32, meta->config_index);
    cr__put64(buf + 40, size);
    cr__put32(buf + 48, crc);
    cr__put32(buf + 52, (uint32_t)clen);
    cr_config_encode(&meta->config, buf + CR__SNAP_FIXED);
    cr__put32(buf + 56, cr_crc32c(0, buf, hlen));
}

int cr__snap_header_peek(const uint8_t *buf, size_t len, size_t *header_len)
{
    size_t hlen;
    if (len < CR__SNAP_FIXED || memcmp(buf, CR__SNAP_MAGIC, 8) != 0 ||
        cr__get32(buf + 8) != 1) {
        return CR_ECORRUPT;
    }
    hlen = cr__get32(buf + 12);
    if (hlen < CR__SNAP_FIXED || hlen > CR__SNAP_FIXED + 8192) {
        return CR_ECORRUPT;
    }
    *header_len = hlen;
    return 0;
}

int cr__snap_header_decode(const uint8_t *buf,
                           size_t len,
                           struct cr_snapshot_meta *meta,
                           uint64_t *size,
                           uint32_t *crc)
{
    uint8_t copy[CR__SNAP_FIXED + 8192];
    size_t hlen;
    size_t clen;
    if (cr__snap_header_peek(buf, len, &hlen) != 0 || len < hlen) {
        return CR_ECORRUPT;
    }
    memcpy(copy, buf, hlen);
    memset(copy + 56, 0, 4);
    if (cr_crc32c(0, copy, hlen) != cr__get32(buf + 56)) {
        return CR_ECORRUPT;
    }
    clen = cr__get32(buf + 52);
    if (clen > hlen - CR__SNAP_FIXED) {
        return CR_ECORRUPT;
    }
    memset(meta, 0, sizeof *meta);
    meta->index = cr__get64(buf + 16);
    meta->term = cr__get64(buf + 24);
    meta->config_index = cr__get64(buf + 32);
    *size = cr__get64(buf + 40);
    *crc = cr__get32(buf + 48);
    if (meta->index == 0 || meta->term == 0 ||
        meta->config_index > meta->index ||
        cr_config_decode(buf + CR__SNAP_FIXED, clen, &meta->config) != 0) {
        return CR_ECORRUPT;
    }
    return 0;
}

void cr__seg_name(char *buf, size_t len, uint64_t seq)
{
    snprintf(buf, len, CR__WAL_PREFIX "%016" PRIu64, seq);
}

void cr__snap_name(char *buf, size_t len, cr_index index, cr_term term)
{
    snprintf(buf, len, CR__SNAP_PREFIX "%016" PRIu64 "-%016" PRIu64, index,
             term);
}

int cr__join(char *buf, const char *dir, const char *name)
{
    int n = snprintf(buf, CR_PATH_MAX, "%s/%s", dir, name);
    return n < 0 || n >= CR_PATH_MAX ? CR_EINVAL : 0;
}

void cr__errf(char *errmsg, const char *fmt, ...)
{
    va_list ap;
    if (errmsg == NULL) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(errmsg, CR_ERRMSG_SIZE, fmt, ap);
    va_end(ap);
}

int cr__read_full(const struct cr_fs *fs,
                  int fd,
                  void *buf,
                  size_t len,
                  uint64_t off)
{
    uint8_t *p = buf;
    while (len > 0) {
        long n = fs->pread(fs->data, fd, p, len, off);
        if (n < 0) {
            if (n == -EINTR) {
                continue;
            }
            return (int)n;
        }
        if (n == 0) {
            return -EIO;
        }
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

int cr__write_full(const struct cr_fs *fs,
                   int fd,
                   const void *buf,
                   size_t len,
                   uint64_t off)
{
    const uint8_t *p = buf;
    while (len > 0) {
        long n = fs->pwrite(fs->data, fd, p, len, off);
        if (n < 0) {
            if (n == -EINTR) {
                continue;
            }
            return (int)n;
        }
        if (n == 0) {
            return -EIO;
        }
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

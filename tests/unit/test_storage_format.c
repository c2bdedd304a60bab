/* On-disk formats of the storage (src/storage/format.c) and snapshot files
 * (snapshot_file.c): round trips, and detection of every single-bit flip
 * in records (padding and reserved bytes included), batches (header and
 * body), segment headers, metadata files and snapshot headers; the
 * chunked snapshot writer and reader, and how the reader detects a
 * truncated or corrupted snapshot. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs_fault.h"
#include "storage_fixture.h"
#include "storage_impl.h"

/* ---------------------------------------------------------------------------
 * CRC32C
 * ------------------------------------------------------------------------- */

/* The check value of CRC-32C (Castagnoli) and the iSCSI test vectors of
 * RFC 3720, B.4; a checksum continues across chunks. */
static void crc32c_known_values(void **state)
{
    uint8_t buf[48];
    const char *digits = "123456789";
    (void)state;
    assert_int_equal(cr_crc32c(0, digits, 9), 0xE3069283u);
    assert_int_equal(cr_crc32c(0, NULL, 0), 0);
    memset(buf, 0, 32);
    assert_int_equal(cr_crc32c(0, buf, 32), 0x8A9136AAu);
    memset(buf, 0xff, 32);
    assert_int_equal(cr_crc32c(0, buf, 32), 0x62A8AB43u);
    for (unsigned i = 0; i < 32; i++) {
        buf[i] = (uint8_t)i;
    }
    assert_int_equal(cr_crc32c(0, buf, 32), 0x46DD794Eu);
    for (size_t cut = 0; cut <= 9; cut++) {
        uint32_t crc = cr_crc32c(0, digits, cut);
        assert_int_equal(cr_crc32c(crc, digits + cut, 9 - cut), 0xE3069283u);
    }
}

/* ---------------------------------------------------------------------------
 * Records
 * ------------------------------------------------------------------------- */

/* Encodes a record into buf (zeroed, with `extra` zero bytes after it, as
 * in a preallocated segment) and returns its size. */
static size_t encode(uint8_t *buf,
                     size_t cap,
                     enum cr__rec_type type,
                     enum cr_entry_type etype,
                     cr_index index,
                     cr_term term,
                     size_t len)
{
    uint8_t payload[2048];
    size_t size = cr__rec_size(len);
    assert_true(size <= cap);
    assert_true(len <= sizeof payload);
    st_payload(payload, len, index, term);
    memset(buf, 0, cap);
    assert_int_equal(
        cr__rec_encode(buf, type, etype, index, term, payload, (uint32_t)len),
        size);
    return size;
}

static void record_round_trip(void **state)
{
    static const size_t lens[] = {0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 100, 1000};
    static const enum cr_entry_type etypes[] = {CR_ENTRY_COMMAND,
                                                CR_ENTRY_CONFIG, CR_ENTRY_NOOP};
    uint8_t buf[2048 + 64];
    (void)state;
    for (unsigned t = 0; t < 3; t++) {
        for (unsigned l = 0; l < sizeof lens / sizeof lens[0]; l++) {
            cr_index index = 1 + l * 1000003u + ((cr_index)1 << 40);
            cr_term term = 7 + t + ((cr_term)1 << 50);
            size_t size = encode(buf, sizeof buf, CR__REC_ENTRY, etypes[t],
                                 index, term, lens[l]);
            struct cr__rec r;
            const char *why = NULL;
            uint8_t expect[1000];
            assert_int_equal(size % 8, 0);
            assert_int_equal(size, CR__REC_HEADER + (lens[l] + 7) / 8 * 8);
            /* The padding is zeros. */
            for (size_t i = CR__REC_HEADER + lens[l]; i < size; i++) {
                assert_int_equal(buf[i], 0);
            }
            assert_int_equal(cr__rec_decode(buf, sizeof buf, &r, &why),
                             CR__REC_OK);
            assert_int_equal(r.type, CR__REC_ENTRY);
            assert_int_equal(r.etype, etypes[t]);
            assert_int_equal(r.len, lens[l]);
            assert_int_equal(r.index, index);
            assert_int_equal(r.term, term);
            assert_ptr_equal(r.payload, buf + CR__REC_HEADER);
            st_payload(expect, lens[l], index, term);
            if (lens[l] > 0) {
                assert_memory_equal(r.payload, expect, lens[l]);
            }
            /* It also decodes with exactly its own bytes available. */
            assert_int_equal(cr__rec_decode(buf, size, &r, &why), CR__REC_OK);
        }
    }
    {
        static const enum cr__rec_type types[] = {
            CR__REC_COMMIT, CR__REC_TRUNCATE, CR__REC_RESET};
        for (unsigned t = 0; t < 3; t++) {
            struct cr__rec r;
            const char *why = NULL;
            size_t size = encode(buf, sizeof buf, types[t], 0, 12345, 77, 0);
            assert_int_equal(size, CR__REC_HEADER);
            assert_int_equal(cr__rec_decode(buf, size, &r, &why), CR__REC_OK);
            assert_int_equal(r.type, types[t]);
            assert_int_equal(r.index, 12345);
            assert_int_equal(r.term, 77);
            assert_int_equal(r.len, 0);
        }
    }
}

/* Every single-bit flip in a record's header or payload (what its CRC
 * covers) is detected: the record never decodes as valid. */
static void record_every_bit_flip_detected(void **state)
{
    struct kind
    {
        enum cr__rec_type type;
        enum cr_entry_type etype;
        size_t len;
    };
    static const struct kind kinds[] = {
        {CR__REC_ENTRY, CR_ENTRY_COMMAND, 0},
        {CR__REC_ENTRY, CR_ENTRY_COMMAND, 1},
        {CR__REC_ENTRY, CR_ENTRY_CONFIG, 13},
        {CR__REC_ENTRY, CR_ENTRY_NOOP, 0},
        {CR__REC_ENTRY, CR_ENTRY_COMMAND, 64},
        {CR__REC_COMMIT, 0, 0},
        {CR__REC_TRUNCATE, 0, 0},
        {CR__REC_RESET, 0, 0},
    };
    uint8_t buf[256];
    (void)state;
    for (unsigned k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        size_t size = encode(buf, sizeof buf, kinds[k].type, kinds[k].etype,
                             1000 + k, 3, kinds[k].len);
        size_t covered = CR__REC_HEADER + kinds[k].len;
        (void)size;
        for (size_t i = 0; i < covered; i++) {
            for (unsigned bit = 0; bit < 8; bit++) {
                struct cr__rec r;
                const char *why = NULL;
                buf[i] ^= (uint8_t)(1u << bit);
                assert_int_not_equal(cr__rec_decode(buf, sizeof buf, &r, &why),
                                     CR__REC_OK);
                assert_non_null(why);
                buf[i] ^= (uint8_t)(1u << bit);
            }
        }
    }
}

/* The zero padding after a record's payload is checked too (it is not
 * covered by the CRC): a flip in any padding byte of a record of any
 * padded length makes it bad. */
static void record_padding_flip_detected(void **state)
{
    uint8_t buf[128];
    (void)state;
    for (size_t len = 1; len < 16; len++) {
        size_t size =
            encode(buf, sizeof buf, CR__REC_ENTRY, CR_ENTRY_COMMAND, 5, 2, len);
        for (size_t i = CR__REC_HEADER + len; i < size; i++) {
            for (unsigned bit = 0; bit < 8; bit++) {
                struct cr__rec r;
                const char *why = NULL;
                buf[i] ^= (uint8_t)(1u << bit);
                assert_int_equal(cr__rec_decode(buf, sizeof buf, &r, &why),
                                 CR__REC_BAD);
                assert_non_null(why);
                /* Also when the buffer ends right after that byte. */
                assert_int_equal(cr__rec_decode(buf, i + 1, &r, &why),
                                 CR__REC_BAD);
                buf[i] ^= (uint8_t)(1u << bit);
            }
        }
        {
            struct cr__rec r;
            const char *why = NULL;
            assert_int_equal(cr__rec_decode(buf, sizeof buf, &r, &why),
                             CR__REC_OK);
        }
    }
}

/* A record that the end of the buffer cuts inside its padding is whole:
 * it decodes, and its size says how much of it is there; one cut in its
 * payload or header is not. */
static void record_cut_in_padding_is_whole(void **state)
{
    uint8_t buf[128];
    (void)state;
    for (size_t len = 0; len < 20; len++) {
        size_t size =
            encode(buf, sizeof buf, CR__REC_ENTRY, CR_ENTRY_COMMAND, 9, 4, len);
        for (size_t avail = 0; avail <= size; avail++) {
            struct cr__rec r;
            const char *why = NULL;
            enum cr__rec_status st = cr__rec_decode(buf, avail, &r, &why);
            if (avail == 0) {
                assert_int_equal(st, CR__REC_END);
            } else if (avail >= CR__REC_HEADER + len) {
                assert_int_equal(st, CR__REC_OK);
                assert_int_equal(r.size, avail);
                assert_int_equal(r.len, len);
                assert_int_equal(r.index, 9);
            } else {
                assert_int_equal(st, CR__REC_BAD);
            }
        }
    }
}

/* Bytes 10-15 of a record header are reserved zeros: any other value is
 * a bad record, even with a CRC that matches. */
static void record_reserved_header_bytes_checked(void **state)
{
    static const enum cr__rec_type types[] = {CR__REC_ENTRY, CR__REC_COMMIT,
                                              CR__REC_TRUNCATE, CR__REC_RESET,
                                              CR__REC_BATCH};
    uint8_t buf[128];
    (void)state;
    for (unsigned t = 0; t < sizeof types / sizeof types[0]; t++) {
        for (size_t b = 10; b < 16; b++) {
            for (unsigned bit = 0; bit < 8; bit++) {
                struct cr__rec r;
                const char *why = NULL;
                encode(buf, sizeof buf, types[t],
                       types[t] == CR__REC_ENTRY ? CR_ENTRY_COMMAND : 0, 3, 1,
                       0);
                assert_int_equal(cr__rec_decode(buf, sizeof buf, &r, &why),
                                 CR__REC_OK);
                buf[b] ^= (uint8_t)(1u << bit);
                cr__put32(buf, cr_crc32c(0, buf + 4, CR__REC_HEADER - 4));
                assert_int_equal(cr__rec_decode(buf, sizeof buf, &r, &why),
                                 CR__REC_BAD);
            }
        }
    }
}

/* Re-encodes buf's CRC after a deliberate change, so that only the
 * semantic checks can reject it. */
static void reseal(uint8_t *buf, uint32_t len)
{
    cr__put32(buf, cr_crc32c(0, buf + 4, CR__REC_HEADER - 4 + len));
}

static void record_decode_rejects(void **state)
{
    uint8_t buf[256];
    struct cr__rec r;
    const char *why = NULL;
    (void)state;
    /* Zeros, whole or fewer than a header: the end. */
    memset(buf, 0, sizeof buf);
    assert_int_equal(cr__rec_decode(buf, sizeof buf, &r, &why), CR__REC_END);
    for (size_t avail = 0; avail <= CR__REC_HEADER; avail++) {
        assert_int_equal(cr__rec_decode(buf, avail, &r, &why), CR__REC_END);
    }
    /* Fewer than a header's bytes that are not all zeros: a partial
     * header, bad (a torn tail at the end of the log). */
    encode(buf, sizeof buf, CR__REC_COMMIT, 0, 9, 1, 0);
    assert_int_equal(cr__rec_decode(buf, 0, &r, &why), CR__REC_END);
    for (size_t avail = 1; avail < CR__REC_HEADER; avail++) {
        bool zeros = true;
        for (size_t i = 0; i < avail; i++) {
            zeros = zeros && buf[i] == 0;
        }
        assert_int_equal(cr__rec_decode(buf, avail, &r, &why),
                         zeros ? CR__REC_END : CR__REC_BAD);
    }
    memset(buf, 0, sizeof buf);
    for (size_t avail = 1; avail < CR__REC_HEADER; avail++) {
        buf[avail - 1] = 0x01;
        assert_int_equal(cr__rec_decode(buf, avail, &r, &why), CR__REC_BAD);
        buf[avail - 1] = 0;
    }
    /* A payload longer than what is left. */
    encode(buf, sizeof buf, CR__REC_ENTRY, CR_ENTRY_COMMAND, 9, 1, 40);
    for (size_t avail = CR__REC_HEADER; avail < CR__REC_HEADER + 40; avail++) {
        assert_int_equal(cr__rec_decode(buf, avail, &r, &why), CR__REC_BAD);
    }
    /* A length far beyond the buffer, with a matching CRC. */
    encode(buf, sizeof buf, CR__REC_ENTRY, CR_ENTRY_COMMAND, 9, 1, 0);
    cr__put32(buf + 4, 0xfffffff0u);
    assert_int_equal(cr__rec_decode(buf, sizeof buf, &r, &why), CR__REC_BAD);
    /* Entries need an index, a term and a known type. */
    encode(buf, sizeof buf, CR__REC_ENTRY, CR_ENTRY_COMMAND, 0, 1, 0);
    assert_int_equal(cr__rec_decode(buf, sizeof buf, &r, &why), CR__REC_BAD);
    encode(buf, sizeof buf, CR__REC_ENTRY, CR_ENTRY_COMMAND, 1, 0, 0);
    assert_int_equal(cr__rec_decode(buf, sizeof buf, &r, &why), CR__REC_BAD);
    for (unsigned et = 0; et < 256; et++) {
        encode(buf, sizeof buf, CR__REC_ENTRY, CR_ENTRY_COMMAND, 1, 1, 0);
        buf[9] = (uint8_t)et;
        reseal(buf, 0);
        assert_int_equal(cr__rec_decode(buf, sizeof buf, &r, &why),
                         et >= 1 && et <= 3 ? CR__REC_OK : CR__REC_BAD);
    }
    /* Commit and truncate records have no payload; a reset needs an index
     * and a term. */
    encode(buf, sizeof buf, CR__REC_COMMIT, 0, 1, 1, 8);
    assert_int_equal(cr__rec_decode(buf, sizeof buf, &r, &why), CR__REC_BAD);
    encode(buf, sizeof buf, CR__REC_TRUNCATE, 0, 1, 1, 8);
    assert_int_equal(cr__rec_decode(buf, sizeof buf, &r, &why), CR__REC_BAD);
    encode(buf, sizeof buf, CR__REC_RESET, 0, 0, 1, 0);
    assert_int_equal(cr__rec_decode(buf, sizeof buf, &r, &why), CR__REC_BAD);
    encode(buf, sizeof buf, CR__REC_RESET, 0, 1, 0, 0);
    assert_int_equal(cr__rec_decode(buf, sizeof buf, &r, &why), CR__REC_BAD);
    encode(buf, sizeof buf, CR__REC_RESET, 0, 1, 1, 8);
    assert_int_equal(cr__rec_decode(buf, sizeof buf, &r, &why), CR__REC_BAD);
    /* A batch header has no payload and no entry type, a body length
     * (never 0) and a 32-bit CRC. */
    encode(buf, sizeof buf, CR__REC_BATCH, 0, 8, 0xffffffffu, 0);
    assert_int_equal(cr__rec_decode(buf, sizeof buf, &r, &why), CR__REC_OK);
    assert_int_equal(r.type, CR__REC_BATCH);
    encode(buf, sizeof buf, CR__REC_BATCH, 0, 8, 1, 8);
    assert_int_equal(cr__rec_decode(buf, sizeof buf, &r, &why), CR__REC_BAD);
    encode(buf, sizeof buf, CR__REC_BATCH, CR_ENTRY_COMMAND, 8, 1, 0);
    assert_int_equal(cr__rec_decode(buf, sizeof buf, &r, &why), CR__REC_BAD);
    encode(buf, sizeof buf, CR__REC_BATCH, 0, 0, 1, 0);
    assert_int_equal(cr__rec_decode(buf, sizeof buf, &r, &why), CR__REC_BAD);
    encode(buf, sizeof buf, CR__REC_BATCH, 0, 8, 0x100000000ull, 0);
    assert_int_equal(cr__rec_decode(buf, sizeof buf, &r, &why), CR__REC_BAD);
    /* Commit, truncate and reset records have no entry type. */
    for (unsigned t = CR__REC_COMMIT; t <= CR__REC_RESET; t++) {
        encode(buf, sizeof buf, (enum cr__rec_type)t, CR_ENTRY_NOOP, 1, 1, 0);
        assert_int_equal(cr__rec_decode(buf, sizeof buf, &r, &why),
                         CR__REC_BAD);
    }
    /* Unknown record types, even with a good CRC. */
    for (unsigned t = 0; t < 256; t++) {
        if (t >= CR__REC_ENTRY && t <= CR__REC_BATCH) {
            continue;
        }
        encode(buf, sizeof buf, CR__REC_COMMIT, 0, 1, 1, 0);
        buf[8] = (uint8_t)t;
        reseal(buf, 0);
        assert_int_equal(cr__rec_decode(buf, sizeof buf, &r, &why),
                         CR__REC_BAD);
    }
}

/* ---------------------------------------------------------------------------
 * Batches
 * ------------------------------------------------------------------------- */

/* A batch as the writer makes it: a header, then a body of whole records
 * of every type. Returns the batch's size (header and body). */
static size_t make_batch(uint8_t *buf, size_t cap, size_t *body_len)
{
    uint8_t payload[64];
    uint8_t *body = buf + CR__REC_HEADER;
    size_t len = 0;
    assert_true(cap >= CR__REC_HEADER + 512);
    memset(buf, 0, cap);
    for (unsigned i = 0; i < 5; i++) {
        st_payload(payload, 13 * i, 20 + i, 3);
        len += cr__rec_encode(body + len, CR__REC_ENTRY, CR_ENTRY_COMMAND,
                              20 + i, 3, payload, 13 * i);
    }
    len += cr__rec_encode(body + len, CR__REC_TRUNCATE, 0, 24, 0, NULL, 0);
    len += cr__rec_encode(body + len, CR__REC_COMMIT, 0, 23, 0, NULL, 0);
    len += cr__rec_encode(body + len, CR__REC_RESET, 0, 40, 3, NULL, 0);
    assert_int_equal(cr__batch_encode(buf, body, len), CR__REC_HEADER);
    *body_len = len;
    return CR__REC_HEADER + len;
}

/* The header of a batch is a record of type CR__REC_BATCH whose index is
 * the body's length and whose term is its CRC32C; the batch is valid with
 * exactly its bytes or more, not with one byte less. */
static void batch_round_trip(void **state)
{
    uint8_t buf[1024];
    struct cr__rec r;
    const char *why = NULL;
    size_t len;
    size_t size = make_batch(buf, sizeof buf, &len);
    (void)state;
    assert_int_equal(len % 8, 0);
    assert_int_equal(cr__rec_decode(buf, sizeof buf, &r, &why), CR__REC_OK);
    assert_int_equal(r.type, CR__REC_BATCH);
    assert_int_equal(r.len, 0);
    assert_int_equal(r.size, CR__REC_HEADER);
    assert_int_equal(r.index, len);
    assert_int_equal(r.term, cr_crc32c(0, buf + CR__REC_HEADER, len));
    assert_true(cr__batch_valid(buf, sizeof buf));
    assert_true(cr__batch_valid(buf, size));
    for (size_t avail = 0; avail < size; avail++) {
        assert_false(cr__batch_valid(buf, avail));
    }
    /* The records of the body decode one after the other to its end. */
    {
        size_t off = CR__REC_HEADER;
        unsigned n = 0;
        while (off < size) {
            assert_int_equal(cr__rec_decode(buf + off, size - off, &r, &why),
                             CR__REC_OK);
            assert_true(r.type != CR__REC_BATCH);
            off += r.size;
            n++;
        }
        assert_int_equal(off, size);
        assert_int_equal(n, 8);
    }
    /* A record of another type is no batch header, even with a body
     * after it that would match. */
    {
        uint8_t other[CR__REC_HEADER + 64];
        encode(other, sizeof other, CR__REC_COMMIT, 0, 8, 0, 0);
        assert_false(cr__batch_valid(other, sizeof other));
        memset(other, 0, sizeof other);
        assert_false(cr__batch_valid(other, sizeof other));
    }
    /* An empty body is not a batch. */
    assert_int_equal(cr__batch_encode(buf, NULL, 0), CR__REC_HEADER);
    assert_false(cr__batch_valid(buf, sizeof buf));
}

/* Every single-bit flip in a batch, in its header or anywhere in its
 * body, makes it invalid. */
static void batch_every_bit_flip_detected(void **state)
{
    uint8_t buf[1024];
    size_t len;
    size_t size = make_batch(buf, sizeof buf, &len);
    (void)state;
    for (size_t i = 0; i < size; i++) {
        for (unsigned bit = 0; bit < 8; bit++) {
            buf[i] ^= (uint8_t)(1u << bit);
            if (cr__batch_valid(buf, sizeof buf)) {
                fail_msg("a flip of bit %u at %zu is not seen", bit, i);
            }
            buf[i] ^= (uint8_t)(1u << bit);
        }
    }
    assert_true(cr__batch_valid(buf, sizeof buf));
}

/* ---------------------------------------------------------------------------
 * Segment headers and metadata
 * ------------------------------------------------------------------------- */

/* cr__seg_header_decode, whichever form it has: from version 2 (records
 * in batches) on it also says which version it found, and answers
 * CR_EINVAL for a valid header of another version. */
static int seg_decode(const uint8_t *buf, size_t len, uint64_t *seq)
{
#if CR__SEG_VERSION >= 2
    uint32_t version = 0;
    int rv = cr__seg_header_decode(buf, len, seq, &version);
    if (rv == 0) {
        assert_int_equal(version, CR__SEG_VERSION);
    }
    return rv;
#else
    return cr__seg_header_decode(buf, len, seq);
#endif
}

static void segment_header_round_trip(void **state)
{
    static const uint64_t seqs[] = {1, 2, 255, 256, 1ull << 33, UINT64_MAX};
    uint8_t buf[CR__SEG_HEADER];
    (void)state;
    for (unsigned i = 0; i < sizeof seqs / sizeof seqs[0]; i++) {
        uint64_t seq = 0;
        cr__seg_header_encode(buf, seqs[i]);
        assert_memory_equal(buf, CR__SEG_MAGIC, 8);
        assert_int_equal(seg_decode(buf, sizeof buf, &seq), 0);
        assert_int_equal(seq, seqs[i]);
        assert_int_equal(seg_decode(buf, sizeof buf - 1, &seq), CR_ECORRUPT);
        for (size_t b = 0; b < CR__SEG_HEADER; b++) {
            for (unsigned bit = 0; bit < 8; bit++) {
                buf[b] ^= (uint8_t)(1u << bit);
                assert_int_equal(seg_decode(buf, sizeof buf, &seq),
                                 CR_ECORRUPT);
                buf[b] ^= (uint8_t)(1u << bit);
            }
        }
    }
#if CR__SEG_VERSION >= 2
    /* A valid header of the format before batches (version 1): told
     * apart from damage, with its version. */
    {
        uint32_t version = 0;
        uint64_t seq = 0;
        cr__seg_header_encode(buf, 7);
        cr__put32(buf + 8, 1);
        cr__put32(buf + 12, cr_crc32c(cr_crc32c(0, buf, 12), buf + 16,
                                      CR__SEG_HEADER - 16));
        assert_int_equal(cr__seg_header_decode(buf, sizeof buf, &seq, &version),
                         CR_EINVAL);
        assert_int_equal(version, 1);
    }
#endif
}

static void meta_round_trip(void **state)
{
    struct cr__meta m, out;
    uint8_t buf[CR__META_SIZE];
    (void)state;
    m.seq = 99;
    m.term = 1ull << 40;
    m.vote = 3;
    m.cluster_id = 0xfeedfacecafebeefull;
    cr__meta_encode(buf, &m);
    assert_memory_equal(buf, CR__META_MAGIC, 8);
    memset(&out, 0, sizeof out);
    assert_int_equal(cr__meta_decode(buf, sizeof buf, &out), 0);
    assert_int_equal(out.seq, m.seq);
    assert_int_equal(out.term, m.term);
    assert_int_equal(out.vote, m.vote);
    assert_int_equal(out.cluster_id, m.cluster_id);
    assert_int_equal(cr__meta_decode(buf, sizeof buf - 1, &out), CR_ECORRUPT);
    /* Sequence 0 is never written, so it is not valid. */
    m.seq = 0;
    cr__meta_encode(buf, &m);
    assert_int_equal(cr__meta_decode(buf, sizeof buf, &out), CR_ECORRUPT);
}

/* Every bit flip anywhere in a metadata file is detected: in the part its
 * CRC covers (bytes 0-43), in the CRC, and in the reserved zeros (bytes
 * 48-63, checked to be zero). */
static void meta_every_bit_flip_detected(void **state)
{
    struct cr__meta m = {.seq = 5, .term = 8, .vote = 2, .cluster_id = 42};
    uint8_t buf[CR__META_SIZE];
    struct cr__meta out;
    (void)state;
    cr__meta_encode(buf, &m);
    for (size_t b = 0; b < CR__META_SIZE; b++) {
        for (unsigned bit = 0; bit < 8; bit++) {
            buf[b] ^= (uint8_t)(1u << bit);
            assert_int_equal(cr__meta_decode(buf, sizeof buf, &out),
                             CR_ECORRUPT);
            buf[b] ^= (uint8_t)(1u << bit);
        }
    }
    assert_int_equal(cr__meta_decode(buf, sizeof buf, &out), 0);
}

/* Bytes 48-63 of a metadata file are zeros, and checked: any other value
 * there is refused although the CRC (of bytes 0-43) matches. */
static void meta_reserved_flip_detected(void **state)
{
    struct cr__meta m = {.seq = 5, .term = 8, .vote = 2, .cluster_id = 42};
    uint8_t buf[CR__META_SIZE];
    struct cr__meta out;
    unsigned accepted = 0;
    (void)state;
    cr__meta_encode(buf, &m);
    for (size_t b = 44; b < CR__META_SIZE; b++) {
        assert_int_equal(buf[b] == 0, b >= 48);
    }
    for (size_t b = 48; b < CR__META_SIZE; b++) {
        for (unsigned v = 1; v < 256; v++) {
            buf[b] = (uint8_t)v;
            if (cr__meta_decode(buf, sizeof buf, &out) == 0) {
                accepted++;
            }
            buf[b] = 0;
        }
    }
    assert_int_equal(accepted, 0);
}

/* ---------------------------------------------------------------------------
 * Snapshot headers
 * ------------------------------------------------------------------------- */

static void snapshot_header_round_trip(void **state)
{
    struct cr_snapshot_meta meta, out;
    uint8_t buf[CR__SNAP_FIXED + 8192];
    size_t hlen, peeked = 0;
    uint64_t size = 0;
    uint32_t crc = 0;
    (void)state;
    for (unsigned servers = 1; servers <= CR_SERVERS_MAX; servers += 5) {
        st_snapshot_meta(&meta, 1000 + servers, 9);
        st_config(&meta.config, servers);
        hlen = cr__snap_header_size(&meta);
        assert_int_equal(hlen % 8, 0);
        assert_true(hlen >=
                    CR__SNAP_FIXED + cr_config_encoded_size(&meta.config));
        cr__snap_header_encode(buf, &meta, 123456789012ull, 0xabcdef01u);
        assert_int_equal(cr__snap_header_peek(buf, CR__SNAP_FIXED, &peeked), 0);
        assert_int_equal(peeked, hlen);
        memset(&out, 0, sizeof out);
        assert_int_equal(cr__snap_header_decode(buf, hlen, &out, &size, &crc),
                         0);
        assert_int_equal(out.index, meta.index);
        assert_int_equal(out.term, meta.term);
        assert_int_equal(out.config_index, meta.config_index);
        assert_true(cr_config_equal(&out.config, &meta.config));
        assert_int_equal(size, 123456789012ull);
        assert_int_equal(crc, 0xabcdef01u);
        assert_int_equal(
            cr__snap_header_decode(buf, hlen - 1, &out, &size, &crc),
            CR_ECORRUPT);
    }
}

/* Every bit flip anywhere in a snapshot header (fixed part, configuration
 * and its padding) is detected by peek or decode. */
static void snapshot_header_every_bit_flip_detected(void **state)
{
    struct cr_snapshot_meta meta, out;
    uint8_t buf[CR__SNAP_FIXED + 8192];
    size_t hlen;
    uint64_t size;
    uint32_t crc;
    (void)state;
    st_snapshot_meta(&meta, 77, 4);
    hlen = cr__snap_header_size(&meta);
    cr__snap_header_encode(buf, &meta, 1000, 0x1234u);
    for (size_t b = 0; b < hlen; b++) {
        for (unsigned bit = 0; bit < 8; bit++) {
            size_t peeked = 0;
            int rv;
            buf[b] ^= (uint8_t)(1u << bit);
            rv = cr__snap_header_peek(buf, CR__SNAP_FIXED, &peeked);
            if (rv == 0) {
                rv = cr__snap_header_decode(
                    buf, peeked <= sizeof buf ? peeked : sizeof buf, &out,
                    &size, &crc);
            }
            assert_int_equal(rv, CR_ECORRUPT);
            buf[b] ^= (uint8_t)(1u << bit);
        }
    }
}

static void file_names(void **state)
{
    char buf[128];
    (void)state;
    cr__seg_name(buf, sizeof buf, 42);
    assert_string_equal(buf, "wal-0000000000000042");
    cr__snap_name(buf, sizeof buf, 1234, 5);
    assert_string_equal(buf, "snapshot-0000000000001234-0000000000000005");
    assert_int_equal(cr__join(buf, "dir", "name"), 0);
    {
        char path[CR_PATH_MAX];
        char *longdir = malloc(CR_PATH_MAX);
        assert_non_null(longdir);
        memset(longdir, 'd', CR_PATH_MAX - 1);
        longdir[CR_PATH_MAX - 1] = '\0';
        assert_int_equal(cr__join(path, longdir, "x"), CR_EINVAL);
        free(longdir);
    }
}

/* ---------------------------------------------------------------------------
 * Snapshot files
 * ------------------------------------------------------------------------- */

static void snap_path(char *buf, cr_index index, cr_term term)
{
    char name[96];
    cr__snap_name(name, sizeof name, index, term);
    assert_int_equal(cr__join(buf, ST_DIR, name), 0);
}

/* Written in chunks and read back in chunks of other sizes, for several
 * sizes including an empty snapshot. */
static void snapshot_chunked_round_trip(void **state)
{
    static const size_t sizes[] = {0, 1, 7, 4096, 65536 + 3, 300000};
    struct fs_fault *ff = fs_fault_new();
    const struct cr_fs *fs = fs_fault_fs(ff);
    uint8_t *data = malloc(300000);
    uint8_t *back = malloc(300000);
    (void)state;
    assert_non_null(data);
    assert_non_null(back);
    assert_int_equal(fs->mkdir(fs->data, ST_DIR), 0);
    for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        static const size_t chunks[] = {1, 3, 1000, 65536, 1u << 20};
        struct cr_snapshot_writer *w;
        struct cr_snapshot_reader *r;
        struct cr_snapshot_meta meta, out;
        char path[CR_PATH_MAX], expect_path[CR_PATH_MAX];
        char errmsg[CR_ERRMSG_SIZE];
        uint64_t size = 0;
        size_t pos = 0, n = 0;
        cr_index index = 10 + i;
        for (size_t k = 0; k < sizes[i]; k++) {
            data[k] = (uint8_t)(k * 31 + i + (k >> 11));
        }
        st_snapshot_meta(&meta, index, 3);
        assert_int_equal(cr_snapshot_writer_open(&w, ST_DIR, fs, &meta, errmsg),
                         0);
        for (size_t c = 0; pos < sizes[i]; c++) {
            size_t len = chunks[(c + i) % 5];
            if (len > sizes[i] - pos) {
                len = sizes[i] - pos;
            }
            assert_int_equal(cr_snapshot_writer_write(w, data + pos, len), 0);
            pos += len;
        }
        assert_int_equal(cr_snapshot_writer_commit(w, 100, path), 0);
        snap_path(expect_path, index, 3);
        assert_string_equal(path, expect_path);
        assert_true(fs_fault_exists(ff, path));
        assert_int_equal(fs_fault_count_names(ff, ST_DIR, "snapshot-"), i + 1);

        assert_int_equal(
            cr_snapshot_reader_open(&r, path, fs, &out, &size, errmsg), 0);
        assert_int_equal(size, sizes[i]);
        assert_int_equal(out.index, index);
        assert_int_equal(out.term, 3);
        assert_int_equal(out.config_index, meta.config_index);
        assert_true(cr_config_equal(&out.config, &meta.config));
        pos = 0;
        for (size_t c = 0;; c++) {
            size_t len = chunks[(c + 2) % 5];
            assert_int_equal(cr_snapshot_reader_read(r, back + pos, len, &n),
                             0);
            if (n == 0) {
                break;
            }
            assert_true(n <= len);
            pos += n;
            assert_true(pos <= sizes[i]);
        }
        assert_int_equal(pos, sizes[i]);
        if (sizes[i] > 0) {
            assert_memory_equal(back, data, sizes[i]);
        }
        /* Reading past the end keeps saying "end". */
        assert_int_equal(cr_snapshot_reader_read(r, back, 10, &n), 0);
        assert_int_equal(n, 0);
        cr_snapshot_reader_close(r);
    }
    /* Nothing temporary is left. */
    assert_int_equal(fs_fault_count_names(ff, ST_DIR, "snapshot-"),
                     sizeof sizes / sizeof sizes[0]);
    assert_int_equal(fs_fault_unsynced(ff), 0);
    free(data);
    free(back);
    fs_fault_free(ff);
}

/* Reads a whole snapshot: the first error of open or read, else 0. */
static int read_all(const struct cr_fs *fs, const char *path, char *errmsg)
{
    struct cr_snapshot_reader *r;
    struct cr_snapshot_meta meta;
    uint64_t size;
    uint8_t buf[777];
    size_t n;
    int rv = cr_snapshot_reader_open(&r, path, fs, &meta, &size, errmsg);
    if (rv != 0) {
        return rv;
    }
    do {
        rv = cr_snapshot_reader_read(r, buf, sizeof buf, &n);
    } while (rv == 0 && n > 0);
    cr_snapshot_reader_close(r);
    return rv;
}

/* A snapshot cut short (anywhere: in its header, in its data, one byte
 * short) or with bytes added is refused at open; a flipped bit in its data
 * fails the read that reaches the end, one in its header fails the open. */
static void snapshot_damage_detected(void **state)
{
    struct fs_fault *ff = fs_fault_new();
    const struct cr_fs *fs = fs_fault_fs(ff);
    char path[CR_PATH_MAX];
    char errmsg[CR_ERRMSG_SIZE];
    uint8_t *orig;
    size_t len;
    struct cr_snapshot_meta meta;
    size_t hlen;
    (void)state;
    assert_int_equal(fs->mkdir(fs->data, ST_DIR), 0);
    assert_int_equal(st_write_snapshot(fs, ST_DIR, 500, 7, 2), 0);
    snap_path(path, 500, 7);
    assert_int_equal(st_check_snapshot(fs, path, 500, 7), 0);
    assert_int_equal(fs_fault_read(ff, path, &orig, &len), 0);
    st_snapshot_meta(&meta, 500, 7);
    hlen = cr__snap_header_size(&meta);
    assert_int_equal(len, hlen + st_snapshot_size(500, 7));
    assert_true(len > hlen + 100);

    /* Truncated at every offset of the header and at some of the data. */
    for (size_t cut = 0; cut < len; cut += cut < hlen + 16 ? 1 : 997) {
        assert_int_equal(fs_fault_write(ff, path, orig, cut), 0);
        errmsg[0] = '\0';
        assert_int_equal(read_all(fs, path, errmsg), CR_ECORRUPT);
        assert_true(strlen(errmsg) > 0);
    }
    assert_int_equal(fs_fault_write(ff, path, orig, len - 1), 0);
    assert_int_equal(read_all(fs, path, errmsg), CR_ECORRUPT);
    /* One byte too many. */
    {
        uint8_t *longer = malloc(len + 1);
        assert_non_null(longer);
        memcpy(longer, orig, len);
        longer[len] = 0;
        assert_int_equal(fs_fault_write(ff, path, longer, len + 1), 0);
        assert_int_equal(read_all(fs, path, errmsg), CR_ECORRUPT);
        free(longer);
    }
    /* A flipped bit anywhere. */
    for (size_t off = 0; off < len; off += off < hlen ? 1 : 61) {
        assert_int_equal(fs_fault_write(ff, path, orig, len), 0);
        assert_int_equal(
            fs_fault_flip(ff, path, off, (uint8_t)(1u << (off % 8))), 0);
        assert_int_equal(read_all(fs, path, errmsg), CR_ECORRUPT);
    }
    /* The last byte of the data, read in chunks: the earlier reads pass,
     * the one that reaches the end fails. */
    {
        struct cr_snapshot_reader *r;
        uint64_t size;
        uint8_t buf[100];
        size_t n, total = 0;
        int rv = 0;
        assert_int_equal(fs_fault_write(ff, path, orig, len), 0);
        assert_int_equal(fs_fault_flip(ff, path, len - 1, 0x80), 0);
        assert_int_equal(
            cr_snapshot_reader_open(&r, path, fs, &meta, &size, errmsg), 0);
        while (total + sizeof buf < size) {
            assert_int_equal(cr_snapshot_reader_read(r, buf, sizeof buf, &n),
                             0);
            assert_int_equal(n, sizeof buf);
            total += n;
        }
        rv = cr_snapshot_reader_read(r, buf, sizeof buf, &n);
        assert_int_equal(rv, CR_ECORRUPT);
        cr_snapshot_reader_close(r);
    }
    /* And intact again, it reads fine. */
    assert_int_equal(fs_fault_write(ff, path, orig, len), 0);
    assert_int_equal(st_check_snapshot(fs, path, 500, 7), 0);
    free(orig);
    fs_fault_free(ff);
}

/* commit keeps the `keep` newest snapshots; abort leaves nothing; a
 * snapshot that was not committed does not survive a crash, one that was
 * does. */
static void snapshot_keep_abort_and_crash(void **state)
{
    struct fs_fault *ff = fs_fault_new();
    const struct cr_fs *fs = fs_fault_fs(ff);
    struct cr_snapshot_writer *w;
    struct cr_snapshot_meta meta;
    char path[CR_PATH_MAX];
    char errmsg[CR_ERRMSG_SIZE];
    (void)state;
    assert_int_equal(fs->mkdir(fs->data, ST_DIR), 0);
    for (cr_index i = 1; i <= 5; i++) {
        assert_int_equal(st_write_snapshot(fs, ST_DIR, i * 10, 2, 2), 0);
        assert_int_equal(fs_fault_count_names(ff, ST_DIR, "snapshot-"),
                         i < 2 ? i : 2);
    }
    snap_path(path, 50, 2);
    assert_true(fs_fault_exists(ff, path));
    snap_path(path, 40, 2);
    assert_true(fs_fault_exists(ff, path));
    assert_int_equal(st_check_snapshot(fs, path, 40, 2), 0);
    /* keep 0 is taken as 1. */
    assert_int_equal(st_write_snapshot(fs, ST_DIR, 60, 2, 0), 0);
    assert_int_equal(fs_fault_count_names(ff, ST_DIR, "snapshot-"), 1);
    fs_fault_crash(ff);
    snap_path(path, 60, 2);
    assert_int_equal(st_check_snapshot(fs, path, 60, 2), 0);

    /* Abort. */
    st_snapshot_meta(&meta, 70, 2);
    assert_int_equal(cr_snapshot_writer_open(&w, ST_DIR, fs, &meta, errmsg), 0);
    assert_int_equal(cr_snapshot_writer_write(w, "abc", 3), 0);
    cr_snapshot_writer_abort(w);
    assert_int_equal(fs_fault_count_names(ff, ST_DIR, "snapshot-"), 1);
    cr_snapshot_writer_abort(NULL);

    /* A crash before commit: the temporary file, if it survives at all,
     * is not a snapshot. */
    assert_int_equal(cr_snapshot_writer_open(&w, ST_DIR, fs, &meta, errmsg), 0);
    assert_int_equal(cr_snapshot_writer_write(w, "abc", 3), 0);
    fs_fault_crash(ff);
    cr_snapshot_writer_abort(w);
    snap_path(path, 70, 2);
    assert_false(fs_fault_exists(ff, path));

    /* Invalid metadata. */
    st_snapshot_meta(&meta, 0, 2);
    assert_int_equal(cr_snapshot_writer_open(&w, ST_DIR, fs, &meta, errmsg),
                     CR_EINVAL);
    st_snapshot_meta(&meta, 5, 0);
    assert_int_equal(cr_snapshot_writer_open(&w, ST_DIR, fs, &meta, errmsg),
                     CR_EINVAL);
    st_snapshot_meta(&meta, 5, 1);
    meta.config_index = 6;
    assert_int_equal(cr_snapshot_writer_open(&w, ST_DIR, fs, &meta, errmsg),
                     CR_EINVAL);
    st_snapshot_meta(&meta, 5, 1);
    meta.config.n = 0;
    assert_int_equal(cr_snapshot_writer_open(&w, ST_DIR, fs, &meta, errmsg),
                     CR_EINVAL);
    /* A missing directory. */
    st_snapshot_meta(&meta, 5, 1);
    assert_int_equal(cr_snapshot_writer_open(&w, "nowhere", fs, &meta, errmsg),
                     CR_EIO);
    assert_true(st_contains(errmsg, "nowhere"));
    fs_fault_free(ff);
}

/* A failed fdatasync at commit: CR_EIO, and no snapshot under the final
 * name (the temporary file is removed). A full disk: CR_ENOSPC. */
static void snapshot_commit_sync_failure(void **state)
{
    struct fs_fault *ff = fs_fault_new();
    const struct cr_fs *fs = fs_fault_fs(ff);
    char path[CR_PATH_MAX];
    (void)state;
    assert_int_equal(fs->mkdir(fs->data, ST_DIR), 0);
    fs_fault_fail_syncs(ff, 1);
    assert_int_equal(st_write_snapshot(fs, ST_DIR, 9, 1, 2), CR_EIO);
    assert_int_equal(fs_fault_count_names(ff, ST_DIR, "snapshot-"), 0);
    snap_path(path, 9, 1);
    assert_false(fs_fault_exists(ff, path));
    /* No space for the data: CR_ENOSPC (storage.h), and the temporary
     * file is gone after the abort. */
    fs_fault_set_budget(ff, 1000);
    assert_int_equal(st_write_snapshot(fs, ST_DIR, 9, 1, 2), CR_ENOSPC);
    assert_int_equal(fs_fault_count_names(ff, ST_DIR, "snapshot-"), 0);
    fs_fault_set_budget(ff, UINT64_MAX);
    assert_int_equal(st_write_snapshot(fs, ST_DIR, 9, 1, 2), 0);
    assert_int_equal(st_check_snapshot(fs, path, 9, 1), 0);
    fs_fault_free(ff);
}

/* The same round trip on the real file system (cr_fs_posix, NULL). */
static void snapshot_posix_round_trip(void **state)
{
    char dir[] = "/tmp/craft-snap-XXXXXX";
    char path[CR_PATH_MAX];
    char name[96];
    (void)state;
    assert_non_null(mkdtemp(dir));
    assert_int_equal(st_write_snapshot(NULL, dir, 33, 4, 2), 0);
    assert_int_equal(st_write_snapshot(&cr_fs_posix, dir, 34, 4, 2), 0);
    cr__snap_name(name, sizeof name, 33, 4);
    assert_int_equal(cr__join(path, dir, name), 0);
    assert_int_equal(st_check_snapshot(NULL, path, 33, 4), 0);
    assert_int_equal(unlink(path), 0);
    cr__snap_name(name, sizeof name, 34, 4);
    assert_int_equal(cr__join(path, dir, name), 0);
    assert_int_equal(st_check_snapshot(&cr_fs_posix, path, 34, 4), 0);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(rmdir(dir), 0);
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        cmocka_set_test_filter(argv[1]);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(crc32c_known_values),
        cmocka_unit_test(record_round_trip),
        cmocka_unit_test(record_every_bit_flip_detected),
        cmocka_unit_test(record_padding_flip_detected),
        cmocka_unit_test(record_cut_in_padding_is_whole),
        cmocka_unit_test(record_reserved_header_bytes_checked),
        cmocka_unit_test(record_decode_rejects),
        cmocka_unit_test(batch_round_trip),
        cmocka_unit_test(batch_every_bit_flip_detected),
        cmocka_unit_test(segment_header_round_trip),
        cmocka_unit_test(meta_round_trip),
        cmocka_unit_test(meta_every_bit_flip_detected),
        cmocka_unit_test(meta_reserved_flip_detected),
        cmocka_unit_test(snapshot_header_round_trip),
        cmocka_unit_test(snapshot_header_every_bit_flip_detected),
        cmocka_unit_test(file_names),
        cmocka_unit_test(snapshot_chunked_round_trip),
        cmocka_unit_test(snapshot_damage_detected),
        cmocka_unit_test(snapshot_keep_abort_and_crash),
        cmocka_unit_test(snapshot_commit_sync_failure),
        cmocka_unit_test(snapshot_posix_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

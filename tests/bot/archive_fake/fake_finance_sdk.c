/*
 * A stand-in for Tencent's WeWorkFinanceSdk_C (会话内容存档), built by the tests.
 *
 * Same symbols and structs as WeWorkFinanceSdk_C.h (WECOM.md §2.1). It serves the records of
 * a JSON-lines file (one GetChatData "chatdata" object per line, sorted by seq) named by
 * FAKE_FINANCE_SDK_DATA: GetChatData(seq, limit) answers those with a larger seq, at most
 * limit (1..1000; more is 10000 参数错误, as the header says). DecryptData reverses the
 * tests' cipher: base64 of (plaintext XOR the random key, repeated); a plaintext must start
 * with "ok:" or the answer is 10006 解密失败, so a wrong key is noticed. A data file replaced
 * (renamed over) is read again by the next GetChatData: new messages arrive.
 *
 * FAKE_FINANCE_SDK_FAIL_FIRST=N: the first N GetChatData calls after Init answer 10001
 * (网络错误). FAKE_FINANCE_SDK_CORP / _SECRET: Init refuses other credentials (10004).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct WeWorkFinanceSdk_t { int ready; } WeWorkFinanceSdk_t;
typedef struct Slice_t { char *buf; int len; } Slice_t;
typedef struct MediaData { char *outindexbuf; int out_len; char *data; int data_len; int is_finish; } MediaData_t;

typedef struct { unsigned long long seq; char *line; } Record;

static Record *records = NULL;
static size_t n_records = 0;
static int fail_left = 0;
static struct stat seen; /* the data file as last read: a replaced file is read again */

/* (Re)read the data file: every Init does, so one loaded library serves many tests. */
static void load(void) {
    for (size_t i = 0; i < n_records; i++) free(records[i].line);
    free(records);
    records = NULL;
    n_records = 0;
    const char *path = getenv("FAKE_FINANCE_SDK_DATA");
    if (!path) return;
    if (stat(path, &seen) != 0) memset(&seen, 0, sizeof seen);
    FILE *f = fopen(path, "r");
    if (!f) return;
    size_t cap = 1024;
    records = malloc(cap * sizeof(Record));
    char *line = NULL;
    size_t n = 0;
    ssize_t got;
    while ((got = getline(&line, &n, f)) > 0) {
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = 0;
        if (got == 0) continue;
        const char *s = strstr(line, "\"seq\":");
        if (!s) continue;
        if (n_records == cap) { cap *= 2; records = realloc(records, cap * sizeof(Record)); }
        records[n_records].seq = strtoull(s + 6, NULL, 10);
        records[n_records].line = strdup(line);
        n_records++;
    }
    free(line);
    fclose(f);
}

static void set_slice(Slice_t *slice, const char *data, size_t len) {
    free(slice->buf);
    slice->buf = malloc(len + 1);
    memcpy(slice->buf, data, len);
    slice->buf[len] = 0;
    slice->len = (int)len;
}

WeWorkFinanceSdk_t *NewSdk(void) {
    WeWorkFinanceSdk_t *sdk = calloc(1, sizeof(WeWorkFinanceSdk_t));
    return sdk;
}

int Init(WeWorkFinanceSdk_t *sdk, const char *corpid, const char *secret) {
    const char *want_corp = getenv("FAKE_FINANCE_SDK_CORP");
    const char *want_secret = getenv("FAKE_FINANCE_SDK_SECRET");
    if (!sdk || !corpid || !secret) return 10000;
    if ((want_corp && strcmp(want_corp, corpid)) || (want_secret && strcmp(want_secret, secret)))
        return 10004;
    load();
    const char *fail = getenv("FAKE_FINANCE_SDK_FAIL_FIRST");
    fail_left = fail ? atoi(fail) : 0;
    sdk->ready = 1;
    return 0;
}

int GetChatData(WeWorkFinanceSdk_t *sdk, unsigned long long seq, unsigned int limit,
                const char *proxy, const char *passwd, int timeout, Slice_t *chatDatas) {
    (void)proxy; (void)passwd; (void)timeout;
    if (!sdk || !sdk->ready || !chatDatas) return 10000;
    if (limit < 1 || limit > 1000) return 10000;
    if (fail_left > 0) { fail_left--; return 10001; }
    const char *path = getenv("FAKE_FINANCE_SDK_DATA");
    struct stat now;
    if (path && stat(path, &now) == 0 && (now.st_ino != seen.st_ino || now.st_size != seen.st_size
                                          || now.st_mtime != seen.st_mtime))
        load(); /* new messages "arrived": the tests replace the file (rename) */
    size_t size = 64, used = 0;
    char *out = malloc(size);
    used += (size_t)sprintf(out, "{\"errcode\":0,\"errmsg\":\"ok\",\"chatdata\":[");
    unsigned int count = 0;
    for (size_t i = 0; i < n_records && count < limit; i++) {
        if (records[i].seq <= seq) continue;
        size_t len = strlen(records[i].line);
        while (used + len + 8 > size) { size *= 2; out = realloc(out, size); }
        if (count) out[used++] = ',';
        memcpy(out + used, records[i].line, len);
        used += len;
        count++;
    }
    while (used + 4 > size) { size *= 2; out = realloc(out, size); }
    out[used++] = ']'; out[used++] = '}'; out[used] = 0;
    set_slice(chatDatas, out, used);
    free(out);
    return 0;
}

static int b64val(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

int DecryptData(const char *encrypt_key, const char *encrypt_msg, Slice_t *msg) {
    if (!encrypt_key || !encrypt_msg || !msg) return 10000;
    size_t klen = strlen(encrypt_key), mlen = strlen(encrypt_msg);
    if (klen == 0) return 10008;
    unsigned char *raw = malloc(mlen + 1);
    size_t n = 0;
    unsigned int acc = 0;
    int bits = 0;
    for (size_t i = 0; i < mlen; i++) {
        if (encrypt_msg[i] == '=') break;
        int v = b64val(encrypt_msg[i]);
        if (v < 0) { free(raw); return 10002; }
        acc = (acc << 6) | (unsigned int)v;
        bits += 6;
        if (bits >= 8) { bits -= 8; raw[n++] = (unsigned char)((acc >> bits) & 0xff); }
    }
    for (size_t i = 0; i < n; i++) raw[i] ^= (unsigned char)encrypt_key[i % klen];
    if (n < 3 || memcmp(raw, "ok:", 3) != 0) { free(raw); return 10006; }
    set_slice(msg, (const char *)raw + 3, n - 3);
    free(raw);
    return 0;
}

int GetMediaData(WeWorkFinanceSdk_t *sdk, const char *indexbuf, const char *sdkFileid,
                 const char *proxy, const char *passwd, int timeout, MediaData_t *media_data) {
    (void)sdk; (void)indexbuf; (void)sdkFileid; (void)proxy; (void)passwd; (void)timeout;
    (void)media_data;
    return 10005; /* fileid错误: the fake serves no media */
}

void DestroySdk(WeWorkFinanceSdk_t *sdk) { free(sdk); }

Slice_t *NewSlice(void) { return calloc(1, sizeof(Slice_t)); }
void FreeSlice(Slice_t *slice) { if (slice) { free(slice->buf); free(slice); } }
char *GetContentFromSlice(Slice_t *slice) { return slice ? slice->buf : NULL; }
int GetSliceLen(Slice_t *slice) { return slice ? slice->len : 0; }

MediaData_t *NewMediaData(void) { return calloc(1, sizeof(MediaData_t)); }
void FreeMediaData(MediaData_t *m) { if (m) { free(m->outindexbuf); free(m->data); free(m); } }
char *GetOutIndexBuf(MediaData_t *m) { return m->outindexbuf; }
char *GetData(MediaData_t *m) { return m->data; }
int GetIndexLen(MediaData_t *m) { return m->out_len; }
int GetDataLen(MediaData_t *m) { return m->data_len; }
int IsMediaDataFinish(MediaData_t *m) { return m->is_finish; }

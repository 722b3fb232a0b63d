// Healthchecks pings through the system's libcurl, loaded with dlopen on the first ping.
//
// Why not URLSession: FoundationNetworking links libcurl and ~30 libraries into every start of the
// binary, even when no ping URL is configured: +10 MB resident and +9 ms per start (bench/README.md).
// Loading libcurl only when a job really pings keeps `--help` and the wrapper's memory small.
// The CURLOPT_* numbers below are libcurl's stable ABI (curl.h: LONG 0, OBJECTPOINT 10000,
// FUNCTIONPOINT 20000, OFF_T 30000); curl_easy_setopt is variadic, which is why this is C.

#include "http_client.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

typedef void CURL;
struct curl_slist;

enum {
    OPT_WRITEDATA = 10001,
    OPT_URL = 10002,
    OPT_WRITEFUNCTION = 20011,
    OPT_POSTFIELDS = 10015,
    OPT_USERAGENT = 10018,
    OPT_HTTPHEADER = 10023,
    OPT_HEADERDATA = 10029,
    OPT_POST = 47,
    OPT_HEADERFUNCTION = 20079,
    OPT_HTTPGET = 80,
    OPT_NOSIGNAL = 99,
    OPT_TIMEOUT_MS = 155,
    OPT_CONNECTTIMEOUT_MS = 156,
    OPT_PROTOCOLS = 181,
    OPT_POSTFIELDSIZE_LARGE = 30120,
    INFO_RESPONSE_CODE = 0x200002,
    PROTO_HTTP = 1,
    PROTO_HTTPS = 2,
    GLOBAL_DEFAULT = 3,
};

static struct {
    int (*global_init)(long);
    CURL *(*easy_init)(void);
    int (*easy_setopt)(CURL *, int, ...);
    int (*easy_perform)(CURL *);
    int (*easy_getinfo)(CURL *, int, ...);
    void (*easy_cleanup)(CURL *);
    const char *(*easy_strerror)(int);
    struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
    void (*slist_free_all)(struct curl_slist *);
    int loaded;
    char problem[200];
} curl;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;

static void load_curl(void) {
    const char *names[] = {"libcurl.so.4", "libcurl-gnutls.so.4", "libcurl.so"};
    void *library = NULL;
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !library; i++) {
        library = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    }
    if (!library) {
        snprintf(curl.problem, sizeof curl.problem, "libcurl is not installed (Debian/Ubuntu: apt-get install libcurl4)");
        return;
    }
#define LOAD(field, symbol)                                                                   \
    *(void **)(&curl.field) = dlsym(library, symbol);                                        \
    if (!curl.field) {                                                                        \
        snprintf(curl.problem, sizeof curl.problem, "libcurl lacks %s", symbol);             \
        return;                                                                               \
    }
    LOAD(global_init, "curl_global_init")
    LOAD(easy_init, "curl_easy_init")
    LOAD(easy_setopt, "curl_easy_setopt")
    LOAD(easy_perform, "curl_easy_perform")
    LOAD(easy_getinfo, "curl_easy_getinfo")
    LOAD(easy_cleanup, "curl_easy_cleanup")
    LOAD(easy_strerror, "curl_easy_strerror")
    LOAD(slist_append, "curl_slist_append")
    LOAD(slist_free_all, "curl_slist_free_all")
#undef LOAD
    // Not thread-safe in libcurl: done once, here.
    if (curl.global_init(GLOBAL_DEFAULT) != 0) {
        snprintf(curl.problem, sizeof curl.problem, "curl_global_init failed");
        return;
    }
    curl.loaded = 1;
}

typedef struct {
    char *bytes;
    size_t capacity;
    size_t length;
} answer_buffer;

static size_t keep_body(char *data, size_t size, size_t count, void *context) {
    answer_buffer *answer = context;
    size_t length = size * count;
    if (answer && answer->bytes) {
        size_t room = answer->capacity - answer->length;
        size_t taken = length < room ? length : room;
        memcpy(answer->bytes + answer->length, data, taken);
        answer->length += taken;
    }
    return length;
}

static size_t read_header(char *data, size_t size, size_t count, void *context) {
    cb_http_result *result = context;
    size_t length = size * count;
    static const char name[] = "ping-body-limit:";
    size_t name_length = sizeof name - 1;
    if (length > name_length && strncasecmp(data, name, name_length) == 0) {
        size_t start = name_length;
        while (start < length && (data[start] == ' ' || data[start] == '\t')) start++;
        size_t end = start;
        while (end < length && data[end] >= '0' && data[end] <= '9') end++;
        size_t digits = end - start < sizeof result->ping_body_limit - 1 ? end - start : sizeof result->ping_body_limit - 1;
        memcpy(result->ping_body_limit, data + start, digits);
        result->ping_body_limit[digits] = 0;
    }
    return length;
}

int cb_http_request(const char *url, const char *body, size_t body_length, long timeout_ms, cb_http_result *result) {
    return cb_http_exchange(url, body, body_length, "text/plain; charset=utf-8", timeout_ms, result, NULL, 0, NULL);
}

int cb_http_exchange(const char *url, const char *body, size_t body_length, const char *content_type, long timeout_ms,
                     cb_http_result *result, char *answer_bytes, size_t capacity, size_t *answer_length) {
    memset(result, 0, sizeof *result);
    answer_buffer answer = {answer_bytes, capacity, 0};
    if (answer_length) *answer_length = 0;
    pthread_once(&load_once, load_curl);
    if (!curl.loaded) {
        snprintf(result->error, sizeof result->error, "%s", curl.problem);
        return -2;
    }
    CURL *handle = curl.easy_init();
    if (!handle) {
        snprintf(result->error, sizeof result->error, "curl_easy_init failed");
        return -1;
    }
    struct curl_slist *headers = NULL;
    curl.easy_setopt(handle, OPT_URL, url);
    curl.easy_setopt(handle, OPT_PROTOCOLS, (long)(PROTO_HTTP | PROTO_HTTPS));
    curl.easy_setopt(handle, OPT_NOSIGNAL, 1L);  // no SIGALRM for DNS timeouts in a threaded program
    curl.easy_setopt(handle, OPT_TIMEOUT_MS, timeout_ms);
    curl.easy_setopt(handle, OPT_CONNECTTIMEOUT_MS, timeout_ms);
    curl.easy_setopt(handle, OPT_USERAGENT, "cloud-backup");
    curl.easy_setopt(handle, OPT_WRITEFUNCTION, keep_body);
    curl.easy_setopt(handle, OPT_WRITEDATA, (void *)&answer);
    curl.easy_setopt(handle, OPT_HEADERFUNCTION, read_header);
    curl.easy_setopt(handle, OPT_HEADERDATA, (void *)result);
    if (body) {
        char content_type_header[200];
        snprintf(content_type_header, sizeof content_type_header, "Content-Type: %s", content_type ? content_type : "text/plain");
        headers = curl.slist_append(headers, content_type_header);
        curl.easy_setopt(handle, OPT_HTTPHEADER, headers);
        curl.easy_setopt(handle, OPT_POST, 1L);
        curl.easy_setopt(handle, OPT_POSTFIELDSIZE_LARGE, (int64_t)body_length);
        curl.easy_setopt(handle, OPT_POSTFIELDS, body);
    } else {
        curl.easy_setopt(handle, OPT_HTTPGET, 1L);
    }
    int code = curl.easy_perform(handle);
    int outcome = 0;
    if (code == 0) {
        curl.easy_getinfo(handle, INFO_RESPONSE_CODE, &result->status);
    } else {
        snprintf(result->error, sizeof result->error, "%s", curl.easy_strerror(code));
        outcome = -1;
    }
    if (headers) curl.slist_free_all(headers);
    curl.easy_cleanup(handle);
    if (answer_length) *answer_length = answer.length;
    return outcome;
}

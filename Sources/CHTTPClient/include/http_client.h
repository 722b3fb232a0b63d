#ifndef CLOUD_BACKUP_HTTP_CLIENT_H
#define CLOUD_BACKUP_HTTP_CLIENT_H

#include <stddef.h>

/// The outcome of one HTTP request made through the system's libcurl.
typedef struct {
    /// The HTTP status, when an answer came (0 otherwise).
    long status;
    /// The value of the answer's `Ping-Body-Limit` header, or empty.
    char ping_body_limit[32];
    /// Why no answer came, for a warning.
    char error[256];
} cb_http_result;

/// Sends a GET (body == NULL) or a POST of `body` to `url` (http or https only), waiting at most
/// `timeout_ms`. Returns 0 when an answer came (any status), -1 when the request failed, -2 when
/// libcurl could not be loaded (see `error`).
int cb_http_request(const char *url, const char *body, size_t body_length, long timeout_ms, cb_http_result *result);

/// The same, with the body's content type and the answer's body kept (up to `capacity` bytes in
/// `answer`; `answer_length` tells how many).
int cb_http_exchange(const char *url, const char *body, size_t body_length, const char *content_type, long timeout_ms,
                     cb_http_result *result, char *answer, size_t capacity, size_t *answer_length);

#endif

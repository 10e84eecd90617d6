/*
 * A small test harness for the C tests: checks that fail the current test and move on,
 * a completion recorder that tests wait on (never a sleep), and loopback helpers.
 * Each test program ends by printing "N passed, N failed" and exits non-zero on failure.
 */
#ifndef SOCKASYNC_TEST_HARNESS_H
#define SOCKASYNC_TEST_HARNESS_H

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sockasync.h"

static int h_passed, h_failed, h_current_failed;
static const char *h_current;

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            h_fail(__FILE__, __LINE__, #cond);                                 \
            return;                                                            \
        }                                                                      \
    } while (0)

/* CHECK inside a helper that returns a value. */
#define CHECK_OR(cond, ret)                                                    \
    do {                                                                       \
        if (!(cond)) {                                                         \
            h_fail(__FILE__, __LINE__, #cond);                                 \
            return ret;                                                        \
        }                                                                      \
    } while (0)

#define CHECK_EQ(a, b)                                                         \
    do {                                                                       \
        long long h_a = (long long)(a), h_b = (long long)(b);                  \
        if (h_a != h_b) {                                                      \
            char h_msg[512];                                                   \
            snprintf(h_msg, sizeof h_msg, "%s == %s (%lld != %lld)", #a, #b,  \
                     h_a, h_b);                                                \
            h_fail(__FILE__, __LINE__, h_msg);                                 \
            return;                                                            \
        }                                                                      \
    } while (0)

/* The call was rejected with this status, and said why. */
#define CHECK_REJECTED(call, status)                                           \
    do {                                                                       \
        CHECK(!(call));                                                        \
        CHECK_EQ(sock_last_status(), (status));                                \
        CHECK(strlen(sock_last_error_message()) > 0);                          \
    } while (0)

static inline void h_fail(const char *file, int line, const char *what)
{
    /* Copy the status and message first: sock_status_name is a call like any other and
     * records its own status. */
    int32_t status = sock_last_status();
    char message[512];
    snprintf(message, sizeof message, "%s", sock_last_error_message());
    fprintf(stderr, "  FAIL %s (%s:%d): %s [last status %d %s: %s]\n", h_current, file,
            line, what, status, sock_status_name(status), message);
    h_current_failed = 1;
}

#define RUN(test)                                                              \
    do {                                                                       \
        h_current = #test;                                                     \
        h_current_failed = 0;                                                  \
        test();                                                                \
        if (h_current_failed) {                                                \
            h_failed++;                                                        \
        } else {                                                               \
            h_passed++;                                                        \
            fprintf(stderr, "  ok   %s\n", #test);                             \
        }                                                                      \
    } while (0)

/* Ends a test program: stops the runtime (joining its threads, so memory checkers see
 * everything the library allocated given back), then prints the totals. */
static inline int h_finish(const char *suite)
{
    sock_runtime_shutdown();
    printf("%s: %d passed, %d failed\n", suite, h_passed, h_failed);
    return h_failed ? 1 : 0;
}

/* Whether callbacks run in the order their operations completed, on one thread: true for
 * Inline dispatch with one reactor (the default). The suites run a second time with 2
 * reactor threads and Pool dispatch (scripts/test.sh), where .NET's rule holds instead: one
 * socket's callbacks may run at the same time on different workers, so tests check their
 * order, or use the reactor as a fence, only in this mode. */
static inline int h_callbacks_in_order(void)
{
    const char *dispatch = getenv("SOCKASYNC_DISPATCH");
    const char *threads = getenv("SOCKASYNC_REACTOR_THREADS");
    return (!dispatch || strcmp(dispatch, "pool") != 0) && (!threads || atoi(threads) <= 1);
}

/* Runs body in a forked child (after stopping the runtime, which a child could not use) and
 * returns its exit status, or -1 if it did not exit normally. */
static inline int in_child(int (*body)(void))
{
    sock_runtime_shutdown();
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        _exit(body());
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
        return -1;
    return WEXITSTATUS(status);
}

/* ---- completions ---------------------------------------------------------- */

/* Records every callback for the args it is the token of. */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int count;
    size_t bytes;
    int32_t error;
    int32_t operation;
    sock *socket;
    sock *accepted;
    pthread_t thread;
} waiter;

static inline void waiter_init(waiter *w)
{
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
}

static inline void waiter_destroy(waiter *w)
{
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->cond);
}

/* Records one completion; take_accepted reads (and so takes ownership of) an accepted socket. */
static inline void waiter_record(waiter *w, sock *s, sock_args *e, int take_accepted)
{
    pthread_mutex_lock(&w->lock);
    w->bytes = sock_args_bytes_transferred(e);
    w->error = sock_args_socket_error(e);
    w->operation = sock_args_last_operation(e);
    w->accepted = take_accepted ? sock_args_accept_socket(e) : NULL;
    w->socket = s;
    w->thread = pthread_self();
    w->count++;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static inline void on_completed(sock *s, sock_args *e, void *token)
{
    waiter_record(token, s, e, 1);
}

/* Waits until the waiter has seen `n` callbacks; false after 10 s (a hang, not a timing). */
static inline int wait_for(waiter *w, int n)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    pthread_mutex_lock(&w->lock);
    int rc = 0;
    while (w->count < n && rc == 0)
        rc = pthread_cond_timedwait(&w->cond, &w->lock, &deadline);
    int ok = w->count >= n;
    pthread_mutex_unlock(&w->lock);
    return ok;
}

typedef bool (*async_op)(sock *, sock_args *);

/*
 * Runs an operation to completion whichever way it goes: returns its socket error, or
 * INT32_MIN if it was rejected or its callback never came. *was_pending says which way.
 */
static inline int32_t complete(async_op op, sock *s, sock_args *e, waiter *w, int *was_pending)
{
    int before = w->count;
    bool pending = op(s, e);
    if (was_pending)
        *was_pending = pending;
    if (!pending) {
        if (sock_last_status() != SOCK_STATUS_OK)
            return INT32_MIN;
        return sock_args_socket_error(e);
    }
    if (!wait_for(w, before + 1))
        return INT32_MIN;
    return sock_args_socket_error(e);
}

/* ---- loopback helpers ----------------------------------------------------- */

/* A listening library socket on 127.0.0.1 (or ::1) with an OS-chosen port. */
static inline sock *listener(int v6, char *endpoint, size_t cap)
{
    sock *l = sock_create(v6 ? SOCK_ADDRESS_FAMILY_INTER_NETWORK_V6
                             : SOCK_ADDRESS_FAMILY_INTER_NETWORK,
                          SOCK_SOCKET_TYPE_STREAM, SOCK_PROTOCOL_TYPE_TCP);
    if (!l)
        return NULL;
    if (!sock_bind(l, v6 ? "[::1]:0" : "127.0.0.1:0") || !sock_listen(l, 64) ||
        sock_local_endpoint(l, endpoint, cap) == 0) {
        sock_free(l);
        return NULL;
    }
    return l;
}

/* A connected pair of library sockets over loopback. */
static inline int connected_pair(sock **client, sock **server)
{
    char ep[64];
    sock *l = listener(0, ep, sizeof ep);
    CHECK_OR(l != NULL, 0);
    waiter wa, wc;
    waiter_init(&wa);
    waiter_init(&wc);
    sock_args *accept_args = sock_args_new(on_completed, &wa);
    sock_args *connect_args = sock_args_new(on_completed, &wc);
    int accept_pending = sock_accept_async(l, accept_args);
    CHECK_OR(accept_pending || sock_last_status() == SOCK_STATUS_OK, 0);
    *client = sock_create(SOCK_ADDRESS_FAMILY_INTER_NETWORK, SOCK_SOCKET_TYPE_STREAM,
                          SOCK_PROTOCOL_TYPE_TCP);
    CHECK_OR(sock_args_set_remote_endpoint(connect_args, ep), 0);
    CHECK_OR(complete(sock_connect_async, *client, connect_args, &wc, NULL) ==
                 SOCK_SOCKET_ERROR_SUCCESS, 0);
    if (accept_pending)
        CHECK_OR(wait_for(&wa, 1), 0);
    CHECK_OR(sock_args_socket_error(accept_args) == SOCK_SOCKET_ERROR_SUCCESS, 0);
    *server = sock_args_accept_socket(accept_args);
    CHECK_OR(*server != NULL, 0);
    sock_args_free(accept_args);
    sock_args_free(connect_args);
    sock_free(l);
    waiter_destroy(&wa);
    waiter_destroy(&wc);
    return 1;
}

/* The port of "127.0.0.1:PORT" / "[::1]:PORT". */
static inline int endpoint_port(const char *endpoint)
{
    const char *colon = strrchr(endpoint, ':');
    return colon ? atoi(colon + 1) : -1;
}

/* A plain blocking POSIX client connected to 127.0.0.1:port (the peer side of tests). */
static inline int raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/*
 * A library socket connected to a blocking POSIX peer on 127.0.0.1; returns the peer's
 * descriptor (or -1). peer_rcvbuf > 0 shrinks the peer's receive buffer before the
 * handshake (set on the listening socket, which the accepted one inherits), so the
 * advertised window stays small and large sends go pending.
 */
static inline int connected_to_raw_sized(sock **s, int peer_rcvbuf)
{
    *s = NULL;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0)
        return -1;
    if (peer_rcvbuf > 0)
        setsockopt(lfd, SOL_SOCKET, SO_RCVBUF, &peer_rcvbuf, sizeof peer_rcvbuf);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 4) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &len) != 0) {
        close(lfd);
        return -1;
    }
    char ep[64];
    snprintf(ep, sizeof ep, "127.0.0.1:%d", ntohs(a.sin_port));
    *s = sock_create(SOCK_ADDRESS_FAMILY_INTER_NETWORK, SOCK_SOCKET_TYPE_STREAM,
                     SOCK_PROTOCOL_TYPE_TCP);
    if (!*s) {
        close(lfd);
        return -1;
    }
    waiter w;
    waiter_init(&w);
    sock_args *e = sock_args_new(on_completed, &w);
    sock_args_set_remote_endpoint(e, ep);
    int32_t err = complete(sock_connect_async, *s, e, &w, NULL);
    sock_args_free(e);
    waiter_destroy(&w);
    int peer = err == SOCK_SOCKET_ERROR_SUCCESS ? accept(lfd, NULL, NULL) : -1;
    close(lfd);
    return peer;
}

/* A library socket connected to a plain POSIX peer: returns the peer's descriptor. */
static inline int connected_to_raw(sock **s)
{
    return connected_to_raw_sized(s, 0);
}

/* Counts one completion by hand (for callbacks other than on_completed). */
static inline void waiter_signal(waiter *w)
{
    pthread_mutex_lock(&w->lock);
    w->count++;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static inline int waiter_count(waiter *w)
{
    pthread_mutex_lock(&w->lock);
    int n = w->count;
    pthread_mutex_unlock(&w->lock);
    return n;
}

/* Reads exactly n bytes from a blocking descriptor; 0 on failure or early EOF. */
static inline int read_exact(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return 0;
        got += (size_t)r;
    }
    return 1;
}

#endif

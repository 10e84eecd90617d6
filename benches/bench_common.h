/*
 * Shared pieces of the sockasync benchmarks (benches/bench_*.c): a clock, fatal-error
 * helpers, loopback sockets on 127.0.0.1 (never any other address), the draining reader
 * every one-way scenario sends to, and the sockasync connect/accept boilerplate.
 *
 * The reader is the same code for every mechanism: a thread doing blocking recv(2) into a
 * 64 KiB buffer in a loop. It counts every byte, checks the bytes against the pattern the
 * sender repeats, and fails the program if the total differs from what was sent, so a
 * mechanism cannot look fast by losing, duplicating or reordering data.
 */
#ifndef SOCKASYNC_BENCH_COMMON_H
#define SOCKASYNC_BENCH_COMMON_H

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "sockasync.h"

/* ---- clock and failures --------------------------------------------------------------- */

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static const char *bench_name = "bench";

/* libuv writes with write(2), which raises SIGPIPE on a reset connection: ignore it in
 * every program, so a failure is reported as an error (EPIPE) instead of killing us. */
#include <signal.h>
static inline void bench_init(const char *name)
{
    bench_name = name;
    signal(SIGPIPE, SIG_IGN);
}

#define DIE(...)                                                                           \
    do {                                                                                   \
        fprintf(stderr, "%s: FAILED: ", bench_name);                                     \
        fprintf(stderr, __VA_ARGS__);                                                      \
        fprintf(stderr, "\n");                                                             \
        exit(1);                                                                           \
    } while (0)

#define DIE_ERRNO(what) DIE("%s: %s", (what), strerror(errno))

/* A rejected sockasync call: copy the status and message before any other library call. */
#define DIE_SOCK(what)                                                                     \
    do {                                                                                   \
        int32_t st_ = sock_last_status();                                                  \
        char msg_[256];                                                                    \
        snprintf(msg_, sizeof msg_, "%s", sock_last_error_message());                      \
        DIE("%s rejected: status %d: %s", (what), (int)st_, msg_);                         \
    } while (0)

static inline void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p)
        DIE("out of memory (%zu bytes)", n);
    return p;
}

/* "raw", "uv" or "sa"; exits with usage otherwise. */
enum mech { MECH_RAW, MECH_UV, MECH_SA };

static inline enum mech parse_mech(const char *s, const char *usage)
{
    if (s && strcmp(s, "raw") == 0)
        return MECH_RAW;
    if (s && strcmp(s, "uv") == 0)
        return MECH_UV;
    if (s && strcmp(s, "sa") == 0)
        return MECH_SA;
    fprintf(stderr, "usage: %s\n", usage);
    exit(2);
}

static inline uint64_t parse_count(const char *s, const char *usage)
{
    char *end;
    unsigned long long v = s ? strtoull(s, &end, 10) : 0;
    if (!s || *end || v == 0) {
        fprintf(stderr, "usage: %s\n", usage);
        exit(2);
    }
    return v;
}

/* ---- the byte pattern ------------------------------------------------------------------ */

/* Every sender repeats one buffer of `period` bytes; byte i of it is pattern_byte(i). */
static inline unsigned char pattern_byte(size_t i)
{
    return (unsigned char)(i * 131u + 7u);
}

static inline void fill_pattern(unsigned char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = pattern_byte(i);
}

/* ---- raw loopback sockets -------------------------------------------------------------- */

/* A blocking listening socket on 127.0.0.1 with a kernel-chosen port (written to *port). */
static inline int raw_listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        DIE_ERRNO("socket");
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 16) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        DIE_ERRNO("bind/listen on 127.0.0.1");
    *port = ntohs(a.sin_port);
    return fd;
}

/* A blocking client socket connected to 127.0.0.1:port. */
static inline int raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        DIE_ERRNO("socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        DIE_ERRNO("connect to 127.0.0.1");
    return fd;
}

static inline void set_nodelay(int fd)
{
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
        DIE_ERRNO("setsockopt TCP_NODELAY");
}

/* Waits until fd is writable (or has an error, which the next send reports). */
static inline void wait_writable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    while (poll(&p, 1, -1) < 0) {
        if (errno != EINTR)
            DIE_ERRNO("poll");
    }
}

/* ---- the draining reader ----------------------------------------------------------------- */

enum { READER_BUFFER = 64 * 1024 };

typedef struct {
    int listen_fd;     /* accepts one connection on it, then closes it */
    uint64_t expected; /* bytes the sender will send before it closes */
    size_t period;     /* the sender repeats pattern_byte(0 .. period-1) */
    bool full_check;   /* compare every byte (else a sample: see reader_matches) */

    uint64_t received;  /* out: bytes read before end of stream */
    uint64_t done_ns;   /* out: now_ns() when the expected total had arrived */
    const char *error;  /* out: NULL if everything matched */
    pthread_t thread;
} reader;

/* Whether n bytes just received at stream position r->received follow the pattern. */
static bool reader_matches(const reader *r, const unsigned char *ref, const unsigned char *buf,
                           size_t n)
{
    uint64_t pos = r->received;
    if (!r->full_check) {
        /* Sampled: the last byte and every byte at a stream position that is a multiple of
         * 4 KiB (16 loads per 64 KiB, so the check does not slow the reader). A lost,
         * repeated or misplaced range shifts the pattern or the total; both are caught. */
        if (buf[n - 1] != pattern_byte((size_t)((pos + n - 1) % r->period)))
            return false;
        for (size_t i = (size_t)((4096 - pos % 4096) % 4096); i < n; i += 4096) {
            if (buf[i] != pattern_byte((size_t)((pos + i) % r->period)))
                return false;
        }
        return true;
    }
    for (size_t done = 0; done < n;) {
        size_t off = (size_t)((pos + done) % r->period);
        size_t m = n - done < r->period ? n - done : r->period;
        if (memcmp(buf + done, ref + off, m) != 0)
            return false;
        done += m;
    }
    return true;
}

static void *reader_main(void *arg)
{
    reader *r = arg;
    int fd = accept4(r->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    close(r->listen_fd);
    r->listen_fd = -1;
    if (fd < 0) {
        r->error = "accept failed";
        return NULL;
    }
    unsigned char *buf = xmalloc(READER_BUFFER);
    /* The pattern twice over, so any window of up to `period` bytes is contiguous. */
    unsigned char *ref = xmalloc(2 * r->period);
    for (size_t i = 0; i < 2 * r->period; i++)
        ref[i] = pattern_byte(i % r->period);

    for (;;) {
        ssize_t n = recv(fd, buf, READER_BUFFER, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r->error = "recv failed";
            break;
        }
        if (n == 0)
            break;
        /* After a mismatch, keep draining (so the sender finishes) but stop checking. */
        if (!r->error && !reader_matches(r, ref, buf, (size_t)n))
            r->error = "received bytes differ from what was sent";
        r->received += (uint64_t)n;
        if (r->received >= r->expected && r->done_ns == 0)
            r->done_ns = now_ns();
    }
    if (!r->error && r->received != r->expected)
        r->error = "the reader's byte count differs from what was sent";
    free(ref);
    free(buf);
    close(fd);
    return NULL;
}

/* Starts a reader on a fresh listener; *port is where the sender connects. */
static inline void reader_start(reader *r, uint64_t expected, size_t period, bool full_check,
                                int *port)
{
    memset(r, 0, sizeof *r);
    r->listen_fd = raw_listener(port);
    r->expected = expected;
    r->period = period;
    r->full_check = full_check;
    if (pthread_create(&r->thread, NULL, reader_main, r) != 0)
        DIE("pthread_create failed");
}

/* Joins the reader (after the sender closed) and fails the program on any mismatch. */
static inline void reader_finish(reader *r)
{
    pthread_join(r->thread, NULL);
    if (r->error)
        DIE("reader: %s (received %" PRIu64 " of %" PRIu64 " bytes)", r->error, r->received,
            r->expected);
}

/* ---- sockasync helpers ----------------------------------------------------------------- */

/* A callback that posts the semaphore passed as the user token. */
static inline void sa_post(sock *s, sock_args *e, void *token)
{
    (void)s;
    (void)e;
    sem_post((sem_t *)token);
}

static inline void sem_wait_all(sem_t *sem)
{
    while (sem_wait(sem) != 0) {
        if (errno != EINTR)
            DIE_ERRNO("sem_wait");
    }
}

/* Runs one operation to completion whichever way it goes (pending: wait for its callback,
 * which must post `done`); fails the program if it is rejected or does not succeed. */
static inline void sa_complete(bool (*op)(sock *, sock_args *), sock *s, sock_args *e,
                               sem_t *done, const char *what)
{
    if (op(s, e))
        sem_wait_all(done);
    else if (sock_last_status() != SOCK_STATUS_OK)
        DIE_SOCK(what);
    if (sock_args_socket_error(e) != SOCK_SOCKET_ERROR_SUCCESS)
        DIE("%s failed: socket error %d", what, (int)sock_args_socket_error(e));
}

/* A sockasync TCP socket connected to 127.0.0.1:port. */
static inline sock *sa_connect(int port)
{
    sock *s = sock_create(SOCK_ADDRESS_FAMILY_INTER_NETWORK, SOCK_SOCKET_TYPE_STREAM,
                          SOCK_PROTOCOL_TYPE_TCP);
    if (!s)
        DIE_SOCK("sock_create");
    sem_t done;
    sem_init(&done, 0, 0);
    sock_args *e = sock_args_new(sa_post, &done);
    if (!e)
        DIE_SOCK("sock_args_new");
    char ep[64];
    snprintf(ep, sizeof ep, "127.0.0.1:%d", port);
    if (!sock_args_set_remote_endpoint(e, ep))
        DIE_SOCK("sock_args_set_remote_endpoint");
    sa_complete(sock_connect_async, s, e, &done, "sock_connect_async");
    sock_args_free(e);
    sem_destroy(&done);
    return s;
}

#endif

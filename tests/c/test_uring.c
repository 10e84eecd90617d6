/*
 * The io_uring backend from C: choosing it, falling back to epoll where the kernel refuses
 * io_uring (a seccomp filter, as container runtimes install), and batched sends
 * (SOCK_OPTION_BATCH_SENDS): many sockets' sends handed to the kernel together, in order,
 * each completed exactly once, also across a close. The other suites run on this backend
 * too (scripts/test.sh runs them with SOCKASYNC_BACKEND=io_uring).
 */
#include "harness.h"

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

/* What the kernel says to io_uring, asked directly (not through the library). */
static int kernel_allows_io_uring(void)
{
    struct {
        uint32_t sq_entries, cq_entries, flags, sq_thread_cpu, sq_thread_idle, features,
            wq_fd, resv[3];
        uint32_t sq_off[10], cq_off[10];
    } params;
    memset(&params, 0, sizeof params);
    long fd = syscall(__NR_io_uring_setup, 2, &params);
    if (fd < 0)
        return 0;
    close((int)fd);
    return 1;
}

/* Starts the runtime on io_uring (after stopping whatever ran). */
static int use_io_uring(void)
{
    sock_runtime_shutdown();
    return sock_runtime_set_backend(SOCK_BACKEND_IO_URING) &&
           sock_runtime_backend() == SOCK_BACKEND_IO_URING;
}

/* ---- choosing the backend ------------------------------------------------- */

static void test_backend_is_chosen_before_start_and_reported(void)
{
    sock_runtime_shutdown();
    CHECK_REJECTED(sock_runtime_set_backend(7), SOCK_STATUS_INVALID_ARGUMENT);
    CHECK(sock_runtime_set_backend(SOCK_BACKEND_IO_URING));
    int32_t expected = kernel_allows_io_uring() ? SOCK_BACKEND_IO_URING : SOCK_BACKEND_EPOLL;
    CHECK_EQ(sock_runtime_backend(), expected);
    CHECK_REJECTED(sock_runtime_set_backend(SOCK_BACKEND_EPOLL), SOCK_STATUS_INVALID_OPERATION);
    sock_runtime_shutdown();
    CHECK(sock_runtime_set_backend(SOCK_BACKEND_EPOLL));
    CHECK_EQ(sock_runtime_backend(), SOCK_BACKEND_EPOLL);
    /* On epoll the option is accepted and has no effect. */
    sock *s = sock_create(SOCK_ADDRESS_FAMILY_INTER_NETWORK, SOCK_SOCKET_TYPE_STREAM,
                          SOCK_PROTOCOL_TYPE_TCP);
    CHECK(s != NULL);
    CHECK(sock_set_option(s, SOCK_OPTION_BATCH_SENDS, 1));
    int64_t value = -1;
    CHECK(sock_get_option(s, SOCK_OPTION_BATCH_SENDS, &value));
    CHECK_EQ(value, 0);
    sock_free(s);
    sock_runtime_shutdown();
}

/* The child refuses io_uring_setup as Docker's default seccomp profile does, then asks the
 * library for io_uring: it must run on epoll, and work. */
static int child_with_io_uring_refused(void)
{
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog program = {.len = sizeof filter / sizeof filter[0], .filter = filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0)
        return 2;
    if (kernel_allows_io_uring())
        return 3; /* the filter did not take */
    if (!sock_runtime_set_backend(SOCK_BACKEND_IO_URING))
        return 4;
    if (sock_runtime_backend() != SOCK_BACKEND_EPOLL)
        return 5;
    sock *client, *server;
    if (!connected_pair(&client, &server))
        return 6;
    waiter w;
    waiter_init(&w);
    sock_args *e = sock_args_new(on_completed, &w);
    char out[] = "over epoll", in[sizeof out];
    sock_args_set_buffer(e, out, sizeof out);
    int ok = complete(sock_send_async, client, e, &w, NULL) == SOCK_SOCKET_ERROR_SUCCESS;
    sock_args_set_buffer(e, in, sizeof in);
    ok = ok && complete(sock_receive_async, server, e, &w, NULL) == SOCK_SOCKET_ERROR_SUCCESS &&
         sock_args_bytes_transferred(e) == sizeof out && memcmp(in, out, sizeof out) == 0;
    sock_args_free(e);
    sock_free(client);
    sock_free(server);
    sock_runtime_shutdown();
    waiter_destroy(&w);
    return ok ? 0 : 7;
}

static void test_refused_io_uring_falls_back_to_epoll(void)
{
    CHECK_EQ(in_child(child_with_io_uring_refused), 0);
}

/* ---- batched sends -------------------------------------------------------- */

#define SLOTS 64

/* Message i: its length and its bytes, so the reader can check every byte and the order. */
static size_t message_len(long i)
{
    return 1 + (size_t)((i * 7919) % 300);
}

static unsigned char message_byte(long i, size_t j)
{
    return (unsigned char)(i * 31 + (long)j * 7 + 1);
}

typedef struct {
    sock *s;
    int peer;
    long messages;
    sock_args *args[SLOTS];
    unsigned char buf[SLOTS][320];
    sock_buf list[SLOTS][2];
    size_t expected[SLOTS];
    int busy[SLOTS];
    long completed, wrong;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    long verified; /* written by the reader thread */
} conn;

static void on_batched_send(sock *s, sock_args *e, void *token)
{
    conn *c = token;
    (void)s;
    pthread_mutex_lock(&c->lock);
    for (int k = 0; k < SLOTS; k++) {
        if (c->args[k] == e) {
            if (!c->busy[k] || sock_args_socket_error(e) != SOCK_SOCKET_ERROR_SUCCESS ||
                sock_args_bytes_transferred(e) != c->expected[k])
                c->wrong++;
            c->busy[k] = 0;
        }
    }
    c->completed++;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

static void *read_and_verify(void *arg)
{
    conn *c = arg;
    unsigned char buf[4096];
    long i = 0;
    size_t j = 0;
    for (;;) {
        ssize_t n = read(c->peer, buf, sizeof buf);
        if (n <= 0)
            break;
        for (ssize_t k = 0; k < n; k++) {
            if (i >= c->messages || buf[k] != message_byte(i, j)) {
                c->verified = -1 - i;
                return NULL;
            }
            if (++j == message_len(i)) {
                i++;
                j = 0;
            }
        }
    }
    c->verified = j == 0 ? i : -1 - i;
    return NULL;
}

static int conn_open(conn *c, long messages)
{
    memset(c, 0, sizeof *c);
    c->messages = messages;
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    c->peer = connected_to_raw(&c->s);
    CHECK_OR(c->peer >= 0, 0);
    CHECK_OR(sock_set_option(c->s, SOCK_OPTION_BATCH_SENDS, 1), 0);
    int64_t value = 0;
    CHECK_OR(sock_get_option(c->s, SOCK_OPTION_BATCH_SENDS, &value) && value == 1, 0);
    for (int k = 0; k < SLOTS; k++) {
        c->args[k] = sock_args_new(on_batched_send, c);
        CHECK_OR(c->args[k] != NULL, 0);
    }
    return 1;
}

/* Issues message i in a free slot (waiting for one); every seventh slot sends a two-buffer
 * list. Returns whether it went pending, as a batched send must. */
static int conn_send(conn *c, long i)
{
    int k = (int)(i % SLOTS);
    pthread_mutex_lock(&c->lock);
    while (c->busy[k])
        pthread_cond_wait(&c->cond, &c->lock);
    c->busy[k] = 1;
    pthread_mutex_unlock(&c->lock);
    size_t len = message_len(i);
    for (size_t j = 0; j < len; j++)
        c->buf[k][j] = message_byte(i, j);
    c->expected[k] = len;
    if (k % 7 == 6) {
        c->list[k][0] = (sock_buf){c->buf[k], len / 2};
        c->list[k][1] = (sock_buf){c->buf[k] + len / 2, len - len / 2};
        CHECK_OR(sock_args_set_buffer_list(c->args[k], c->list[k], 2), 0);
    } else {
        CHECK_OR(sock_args_set_buffer(c->args[k], c->buf[k], len), 0);
    }
    return sock_send_async(c->s, c->args[k]);
}

static int conn_wait_all(conn *c, long sends)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 20;
    pthread_mutex_lock(&c->lock);
    int rc = 0;
    while (c->completed < sends && rc == 0)
        rc = pthread_cond_timedwait(&c->cond, &c->lock, &deadline);
    int done = c->completed == sends;
    pthread_mutex_unlock(&c->lock);
    return done;
}

static void conn_close(conn *c)
{
    for (int k = 0; k < SLOTS; k++)
        sock_args_free(c->args[k]);
    sock_free(c->s);
    if (c->peer >= 0)
        close(c->peer);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->cond);
}

#define CONNS 4
#define MESSAGES 20000

static void test_batched_sends_of_many_sockets_arrive_whole_and_in_order(void)
{
    CHECK(use_io_uring());
    static conn conns[CONNS];
    pthread_t readers[CONNS];
    for (int c = 0; c < CONNS; c++) {
        CHECK(conn_open(&conns[c], MESSAGES));
        CHECK(pthread_create(&readers[c], NULL, read_and_verify, &conns[c]) == 0);
    }
    long not_pending = 0;
    for (long i = 0; i < MESSAGES; i++)
        for (int c = 0; c < CONNS; c++)
            if (!conn_send(&conns[c], i))
                not_pending++;
    CHECK_EQ(not_pending, 0);
    for (int c = 0; c < CONNS; c++) {
        CHECK(conn_wait_all(&conns[c], MESSAGES));
        CHECK(sock_shutdown(conns[c].s, SOCK_SHUTDOWN_HOW_SEND));
        CHECK(pthread_join(readers[c], NULL) == 0);
        CHECK_EQ(conns[c].wrong, 0);
        CHECK_EQ(conns[c].verified, MESSAGES);
        conn_close(&conns[c]);
    }
}

/* Sends issued from their own callbacks (on the reactor's thread) batch too: one args
 * object carries every message, each callback issuing the next. */
static long chain_next;

static void on_chained_send(sock *s, sock_args *e, void *token)
{
    conn *c = token;
    on_batched_send(s, e, c);
    long i = chain_next++;
    if (i >= c->messages)
        return;
    pthread_mutex_lock(&c->lock);
    c->busy[0] = 1;
    pthread_mutex_unlock(&c->lock);
    size_t len = message_len(i);
    for (size_t j = 0; j < len; j++)
        c->buf[0][j] = message_byte(i, j);
    c->expected[0] = len;
    if (!sock_args_set_buffer(e, c->buf[0], len) || !sock_send_async(s, e)) {
        pthread_mutex_lock(&c->lock);
        c->wrong++;
        pthread_mutex_unlock(&c->lock);
    }
}

static void test_batched_sends_issued_from_callbacks_keep_their_order(void)
{
    CHECK(use_io_uring());
    static conn c;
    CHECK(conn_open(&c, 5000));
    pthread_t reader;
    CHECK(pthread_create(&reader, NULL, read_and_verify, &c) == 0);
    sock_args_free(c.args[0]);
    c.args[0] = sock_args_new(on_chained_send, &c);
    CHECK(c.args[0] != NULL);
    chain_next = 0;
    /* The first message from here, through the callback's own code as if a zero-byte send
     * had completed (fresh args read 0 bytes, Success); the callbacks send the rest. */
    c.busy[0] = 1;
    on_chained_send(c.s, c.args[0], &c);
    CHECK(conn_wait_all(&c, c.messages + 1));
    CHECK(sock_shutdown(c.s, SOCK_SHUTDOWN_HOW_SEND));
    CHECK(pthread_join(reader, NULL) == 0);
    CHECK_EQ(c.wrong, 0);
    CHECK_EQ(c.verified, c.messages);
    conn_close(&c);
}

/* A send with flags and a disconnect take the ordinary path between batched sends; the
 * stream keeps the order they were issued in, and ends after the last byte. */
static void test_flagged_sends_and_disconnect_keep_their_place_among_batched_sends(void)
{
    CHECK(use_io_uring());
    static conn c;
    CHECK(conn_open(&c, 30));
    pthread_t reader;
    CHECK(pthread_create(&reader, NULL, read_and_verify, &c) == 0);
    for (long i = 0; i < 30; i++) {
        int k = (int)(i % SLOTS);
        CHECK(sock_args_set_flags(c.args[k], i % 10 == 5 ? SOCK_SOCKET_FLAGS_DONT_ROUTE : 0));
        int pending = conn_send(&c, i);
        if (i % 10 != 5)
            CHECK(pending);
        else if (!pending)
            CHECK_EQ(sock_last_status(), SOCK_STATUS_OK);
    }
    waiter w;
    waiter_init(&w);
    sock_args *d = sock_args_new(on_completed, &w);
    CHECK(complete(sock_disconnect_async, c.s, d, &w, NULL) == SOCK_SOCKET_ERROR_SUCCESS);
    /* The peer's read ends (end of stream) only after all 30 messages. */
    CHECK(pthread_join(reader, NULL) == 0);
    CHECK_EQ(c.verified, 30);
    /* Synchronous completions have no callback: every pending one came. */
    CHECK_EQ(c.wrong, 0);
    sock_args_free(d);
    waiter_destroy(&w);
    pthread_mutex_lock(&c.lock);
    for (int k = 0; k < 30; k++)
        CHECK(!c.busy[k] || k % 10 == 5);
    pthread_mutex_unlock(&c.lock);
    conn_close(&c);
}

/* Close with batches in the kernel (the peer reads nothing): every send completes exactly
 * once, fully sent or OperationAborted, and the connection really closes (the peer's read
 * ends rather than waiting). */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int callbacks, aborted, sent_whole, wrong;
} tally;

static unsigned char big[64][16384];

/* Counts one completion: sent whole (expected_len bytes, Success), failed with one of
 * the errors `failed` accepts, or wrong. */
static void tally_add(tally *t, sock_args *e, size_t expected_len, int (*failed)(int32_t))
{
    int32_t error = sock_args_socket_error(e);
    pthread_mutex_lock(&t->lock);
    t->callbacks++;
    if (error == SOCK_SOCKET_ERROR_SUCCESS && sock_args_bytes_transferred(e) == expected_len)
        t->sent_whole++;
    else if (failed && failed(error))
        t->aborted++;
    else
        t->wrong++;
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->lock);
}

static int is_aborted(int32_t error)
{
    return error == SOCK_SOCKET_ERROR_OPERATION_ABORTED;
}

static void on_tallied(sock *s, sock_args *e, void *token)
{
    (void)s;
    tally_add(token, e, sizeof big[0], is_aborted);
}

/* Counts completions; anything but a whole 16-byte send is wrong. */
static void on_counted(sock *s, sock_args *e, void *token)
{
    (void)s;
    tally_add(token, e, 16, NULL);
}

/* 64 batched 16-KiB sends to a peer whose 4-KiB window takes almost none of it. */
static int start_big_sends(sock **s, int *peer, tally *t, sock_args **args)
{
    CHECK_OR(use_io_uring(), 0);
    *peer = connected_to_raw_sized(s, 4096);
    CHECK_OR(*peer >= 0, 0);
    CHECK_OR(sock_set_option(*s, SOCK_OPTION_BATCH_SENDS, 1), 0);
    CHECK_OR(sock_set_option(*s, SOCK_OPTION_SEND_BUFFER_SIZE, 4096), 0);
    memset(t, 0, sizeof *t);
    pthread_mutex_init(&t->lock, NULL);
    pthread_cond_init(&t->cond, NULL);
    for (int k = 0; k < 64; k++) {
        args[k] = sock_args_new(on_tallied, t);
        CHECK_OR(sock_args_set_buffer(args[k], big[k], sizeof big[k]), 0);
        CHECK_OR(sock_send_async(*s, args[k]), 0);
    }
    return 1;
}

static int tally_wait(tally *t, int callbacks)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    pthread_mutex_lock(&t->lock);
    while (t->callbacks < callbacks &&
           pthread_cond_timedwait(&t->cond, &t->lock, &deadline) == 0)
        ;
    int seen = t->callbacks;
    pthread_mutex_unlock(&t->lock);
    return seen;
}

static void end_big_sends(sock *s, int peer, tally *t, sock_args **args)
{
    for (int k = 0; k < 64; k++)
        sock_args_free(args[k]);
    sock_free(s);
    close(peer);
    pthread_mutex_destroy(&t->lock);
    pthread_cond_destroy(&t->cond);
}

static void test_close_with_batches_in_the_kernel_completes_each_send_once(void)
{
    sock *s;
    int peer;
    tally t;
    sock_args *args[64];
    CHECK(start_big_sends(&s, &peer, &t, args));
    /* 1 MiB cannot fit a 4 KiB window: some is certainly still in the kernel's hands. */
    sock_close(s);
    CHECK_EQ(tally_wait(&t, 64), 64);
    CHECK_EQ(t.wrong, 0);
    CHECK(t.aborted > 0);
    CHECK_EQ(t.aborted + t.sent_whole, 64);
    /* Closed for real: the peer's reads end (reset) instead of waiting for more. */
    struct timeval tv = {.tv_sec = 10};
    setsockopt(peer, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[65536];
    ssize_t n;
    while ((n = read(peer, buf, sizeof buf)) > 0)
        ;
    CHECK(n == 0 || errno == ECONNRESET);
    sock_runtime_shutdown();
    CHECK_EQ(t.callbacks, 64); /* and none after */
    end_big_sends(s, peer, &t, args);
}

/* A runtime shutdown with batches in the kernel waits for them: every callback has run
 * when it returns. */
static void test_shutdown_with_batches_in_the_kernel_delivers_every_callback(void)
{
    sock *s;
    int peer;
    tally t;
    sock_args *args[64];
    CHECK(start_big_sends(&s, &peer, &t, args));
    sock_runtime_shutdown();
    CHECK_EQ(t.callbacks, 64);
    CHECK_EQ(t.wrong, 0);
    CHECK(t.aborted > 0);
    end_big_sends(s, peer, &t, args);
}

/* The peer resets the connection with batches in the kernel: every send completes once,
 * whole or with the connection's error (never a success cut short), and so does a send
 * issued after it. */
static int is_connection_error(int32_t error)
{
    return error == SOCK_SOCKET_ERROR_CONNECTION_RESET || error == SOCK_SOCKET_ERROR_SHUTDOWN ||
           error == SOCK_SOCKET_ERROR_CONNECTION_ABORTED;
}

static void on_reset_tallied(sock *s, sock_args *e, void *token)
{
    (void)s;
    tally_add(token, e, sizeof big[0], is_connection_error);
}

static void test_a_reset_with_batches_in_the_kernel_fails_each_send_once(void)
{
    sock *s;
    int peer;
    tally t;
    sock_args *args[64];
    CHECK(start_big_sends(&s, &peer, &t, args));
    /* Freed while in flight: their callbacks still come (and are counted). */
    for (int k = 0; k < 64; k++)
        sock_args_free(args[k]);
    /* 64 more behind them, counted by a callback that takes the connection's errors. */
    tally r;
    memset(&r, 0, sizeof r);
    pthread_mutex_init(&r.lock, NULL);
    pthread_cond_init(&r.cond, NULL);
    sock_args *more[64];
    for (int k = 0; k < 64; k++) {
        more[k] = sock_args_new(on_reset_tallied, &r);
        CHECK(sock_args_set_buffer(more[k], big[k], sizeof big[k]));
        CHECK(sock_send_async(s, more[k]));
    }
    struct linger abortive = {.l_onoff = 1, .l_linger = 0};
    CHECK(setsockopt(peer, SOL_SOCKET, SO_LINGER, &abortive, sizeof abortive) == 0);
    close(peer);
    CHECK_EQ(tally_wait(&t, 64), 64);
    CHECK_EQ(tally_wait(&r, 64), 64);
    CHECK(r.aborted > 0);
    CHECK_EQ(r.wrong, 0);
    CHECK_EQ(r.aborted + r.sent_whole, 64);
    /* The first set ended the same way (its callback counts errors other than aborts as
     * wrong): none may be left without a callback. */
    CHECK_EQ(t.callbacks, 64);
    /* A send after the reset: it goes pending (batched) and fails. */
    waiter w;
    waiter_init(&w);
    sock_args *after = sock_args_new(on_completed, &w);
    CHECK(sock_args_set_buffer(after, big[0], 16));
    CHECK(sock_send_async(s, after));
    CHECK(wait_for(&w, 1));
    CHECK(w.error != SOCK_SOCKET_ERROR_SUCCESS);
    sock_args_free(after);
    waiter_destroy(&w);
    for (int k = 0; k < 64; k++)
        sock_args_free(more[k]);
    sock_free(s);
    pthread_mutex_destroy(&r.lock);
    pthread_cond_destroy(&r.cond);
    pthread_mutex_destroy(&t.lock);
    pthread_cond_destroy(&t.cond);
}

/* One batched send with more buffers than one sendmsg takes (IOV_MAX = 1024) arrives whole,
 * in order, and completes once with every byte counted. */
static void test_a_batched_send_of_more_buffers_than_iov_max_arrives_whole(void)
{
    CHECK(use_io_uring());
    enum { PIECES = 2500 };
    static unsigned char data[PIECES * 3];
    static sock_buf list[PIECES];
    for (int i = 0; i < PIECES * 3; i++)
        data[i] = (unsigned char)(i * 13 + 5);
    for (int i = 0; i < PIECES; i++)
        list[i] = (sock_buf){data + i * 3, 3};
    sock *s;
    int peer = connected_to_raw(&s);
    CHECK(peer >= 0);
    CHECK(sock_set_option(s, SOCK_OPTION_BATCH_SENDS, 1));
    waiter w;
    waiter_init(&w);
    sock_args *e = sock_args_new(on_completed, &w);
    CHECK(sock_args_set_buffer_list(e, list, PIECES));
    CHECK(sock_send_async(s, e));
    static unsigned char got[PIECES * 3];
    CHECK(read_exact(peer, got, sizeof got));
    CHECK(memcmp(got, data, sizeof got) == 0);
    CHECK(wait_for(&w, 1));
    CHECK_EQ(w.error, SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(w.bytes, sizeof data);
    sock_args_free(e);
    waiter_destroy(&w);
    sock_free(s);
    close(peer);
}

/* Sends that went pending the usual way (tried at once, the kernel said "would block") are
 * resumed through the ring when the socket becomes writable: still whole, in order, once. */
typedef struct {
    int peer;
    long verified; /* bytes that matched, or -1 */
} slow_reader;

static unsigned char stream_byte(size_t at)
{
    return (unsigned char)(at * 7 + at / 16384);
}

static void *read_stream(void *arg)
{
    slow_reader *r = arg;
    unsigned char buf[4096];
    size_t at = 0;
    ssize_t n;
    while ((n = read(r->peer, buf, sizeof buf)) > 0) {
        for (ssize_t k = 0; k < n; k++, at++) {
            if (buf[k] != stream_byte(at)) {
                r->verified = -1;
                return NULL;
            }
        }
    }
    r->verified = (long)at;
    return NULL;
}

static void test_sends_that_went_pending_resume_through_the_ring_in_order(void)
{
    CHECK(use_io_uring());
    sock *s;
    slow_reader r = {.verified = 0};
    r.peer = connected_to_raw_sized(&s, 4096);
    CHECK(r.peer >= 0);
    CHECK(sock_set_option(s, SOCK_OPTION_SEND_BUFFER_SIZE, 4096));
    for (size_t at = 0; at < sizeof big; at++)
        big[at / sizeof big[0]][at % sizeof big[0]] = stream_byte(at);
    pthread_t reader;
    CHECK(pthread_create(&reader, NULL, read_stream, &r) == 0);
    tally t;
    memset(&t, 0, sizeof t);
    pthread_mutex_init(&t.lock, NULL);
    pthread_cond_init(&t.cond, NULL);
    sock_args *args[64];
    int pending = 0;
    for (int k = 0; k < 64; k++) {
        args[k] = sock_args_new(on_tallied, &t);
        CHECK(sock_args_set_buffer(args[k], big[k], sizeof big[k]));
        if (sock_send_async(s, args[k]))
            pending++;
        else
            CHECK_EQ(sock_args_socket_error(args[k]), SOCK_SOCKET_ERROR_SUCCESS);
    }
    CHECK(pending > 0); /* 1 MiB into a 4 KiB window */
    CHECK_EQ(tally_wait(&t, pending), pending);
    CHECK_EQ(t.sent_whole, pending);
    CHECK(sock_shutdown(s, SOCK_SHUTDOWN_HOW_SEND));
    CHECK(pthread_join(reader, NULL) == 0);
    CHECK_EQ(r.verified, (long)sizeof big);
    for (int k = 0; k < 64; k++)
        sock_args_free(args[k]);
    sock_free(s);
    close(r.peer);
    pthread_mutex_destroy(&t.lock);
    pthread_cond_destroy(&t.cond);
}

/* More batches in one turn than the ring's submission queue holds (256): the rest wait
 * for the same turn's submission, in order, and every byte still arrives. */
static void test_more_batches_in_one_turn_than_the_submission_queue_holds(void)
{
    CHECK(use_io_uring());
    enum { SOCKETS = 400, SENDS = 4, LEN = 16 };
    static sock *s[SOCKETS];
    static int peer[SOCKETS];
    static sock_args *e[SOCKETS][SENDS];
    static unsigned char data[SOCKETS][SENDS][LEN];
    tally t;
    memset(&t, 0, sizeof t);
    pthread_mutex_init(&t.lock, NULL);
    pthread_cond_init(&t.cond, NULL);
    for (int i = 0; i < SOCKETS; i++) {
        peer[i] = connected_to_raw(&s[i]);
        CHECK(peer[i] >= 0);
        CHECK(sock_set_option(s[i], SOCK_OPTION_BATCH_SENDS, 1));
    }
    /* 1,600 sends issued back to back: each turn of the reactor finds hundreds of sockets
     * waiting to be submitted (checked by hand with a trace: about 140 entries overflowed). */
    for (int k = 0; k < SENDS; k++) {
        for (int i = 0; i < SOCKETS; i++) {
            for (int j = 0; j < LEN; j++)
                data[i][k][j] = (unsigned char)(i * 7 + k * 3 + j);
            e[i][k] = sock_args_new(on_counted, &t);
            CHECK(sock_args_set_buffer(e[i][k], data[i][k], LEN));
            CHECK(sock_send_async(s[i], e[i][k]));
        }
    }
    CHECK_EQ(tally_wait(&t, SOCKETS * SENDS), SOCKETS * SENDS);
    CHECK_EQ(t.wrong, 0);
    for (int i = 0; i < SOCKETS; i++) {
        unsigned char got[SENDS * LEN];
        CHECK(read_exact(peer[i], got, sizeof got));
        CHECK(memcmp(got, data[i], sizeof got) == 0);
        for (int k = 0; k < SENDS; k++)
            sock_args_free(e[i][k]);
        sock_free(s[i]);
        close(peer[i]);
    }
    pthread_mutex_destroy(&t.lock);
    pthread_cond_destroy(&t.cond);
}

/* A closed listener's port is free at once, as on epoll (the ring holds no file open). */
static void test_a_closed_listener_can_be_bound_again_at_once(void)
{
    CHECK(use_io_uring());
    char ep[64];
    sock *l = listener(0, ep, sizeof ep);
    CHECK(l != NULL);
    sock_free(l);
    sock *again = sock_create(SOCK_ADDRESS_FAMILY_INTER_NETWORK, SOCK_SOCKET_TYPE_STREAM,
                              SOCK_PROTOCOL_TYPE_TCP);
    CHECK(again != NULL);
    CHECK(sock_bind(again, ep));
    CHECK(sock_listen(again, 4));
    sock_free(again);
}

/* The reactor runs a flagged send's callback in the pass where it submits the turn's
 * batches (the ring resumes the flagged send's queue the ordinary way). What that callback
 * starts on the same thread, which no wake-up announces, is done before the reactor sleeps:
 * a batched send on another socket goes out and a close's aborts are delivered, with no
 * other event to wake it. */
static sock *own_work_batched, *own_work_closed;
static sock_args *own_work_send;

static void on_flagged_send_starts_more(sock *s, sock_args *e, void *token)
{
    (void)s;
    (void)e;
    waiter_signal(token);
    CHECK(sock_args_set_buffer(own_work_send, "B!", 2));
    CHECK(sock_send_async(own_work_batched, own_work_send)); /* batched: always pending */
    sock_close(own_work_closed);
}

static void test_work_a_callback_starts_in_the_submission_pass_is_done_before_the_reactor_sleeps(void)
{
    CHECK(use_io_uring());
    sock *a;
    int peer_a = connected_to_raw_sized(&a, 4096);
    int peer_b = connected_to_raw(&own_work_batched);
    int peer_c = connected_to_raw(&own_work_closed);
    CHECK(peer_a >= 0 && peer_b >= 0 && peer_c >= 0);
    CHECK(sock_set_option(own_work_batched, SOCK_OPTION_BATCH_SENDS, 1));
    waiter sent_b, received_c, flagged;
    waiter_init(&sent_b);
    waiter_init(&received_c);
    waiter_init(&flagged);
    own_work_send = sock_args_new(on_completed, &sent_b);
    static char c_buf[16];
    sock_args *c_receive = sock_args_new(on_completed, &received_c);
    CHECK(sock_args_set_buffer(c_receive, c_buf, sizeof c_buf));
    CHECK(sock_receive_async(own_work_closed, c_receive)); /* nothing sent to it */

    size_t big = (size_t)4 << 20;
    char *payload = calloc(1, big);
    sock_args *a_send = sock_args_new(on_flagged_send_starts_more, &flagged);
    CHECK(sock_args_set_buffer(a_send, payload, big));
    CHECK(sock_args_set_flags(a_send, SOCK_SOCKET_FLAGS_DONT_ROUTE));
    CHECK(sock_send_async(a, a_send)); /* 4 MiB into a 4 KiB window */
    static char sink[65536];
    size_t got = 0;
    while (got < big) {
        ssize_t n = read(peer_a, sink, sizeof sink);
        if (n <= 0) {
            CHECK(n > 0);
            break;
        }
        got += (size_t)n;
    }
    CHECK(wait_for(&flagged, 1));
    CHECK(wait_for(&sent_b, 1));
    if (sent_b.count == 1) { /* else the peer would wait for ever */
        CHECK_EQ(sent_b.error, SOCK_SOCKET_ERROR_SUCCESS);
        char two[2] = {0};
        CHECK_EQ(read_exact(peer_b, two, 2), 1);
        CHECK(two[0] == 'B' && two[1] == '!');
    }
    CHECK(wait_for(&received_c, 1));
    CHECK_EQ(received_c.error, SOCK_SOCKET_ERROR_OPERATION_ABORTED);

    sock_args_free(a_send);
    sock_args_free(c_receive);
    sock_args_free(own_work_send);
    sock_free(a);
    sock_free(own_work_batched);
    sock_free(own_work_closed);
    free(payload);
    close(peer_a);
    close(peer_b);
    close(peer_c);
    waiter_destroy(&sent_b);
    waiter_destroy(&received_c);
    waiter_destroy(&flagged);
}

/* A close racing a batched send issued from a callback: every send that went pending gets
 * exactly one callback, whichever side wins (the fuzzer found a send queued into a queue
 * the close had already stopped, its callback never coming). The peer is gone, so each
 * batch fails at once and its callback sends again: a chain as fast as the reactor turns,
 * which the test thread closes under it at a different point each round. */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    sock *s;
    long pending, callbacks, cycles, synchronous;
} chain;

static void on_chain_sent(sock *s, sock_args *e, void *token)
{
    (void)s;
    chain *c = token;
    bool again = sock_send_async(c->s, e);
    pthread_mutex_lock(&c->lock);
    if (again)
        c->pending++;
    else if (sock_last_status() == SOCK_STATUS_OK)
        c->synchronous++;
    c->cycles++;
    c->callbacks++;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

static void test_a_close_racing_batched_sends_from_callbacks_completes_each_once(void)
{
    enum { ROUNDS = 300 };
    CHECK(use_io_uring());
    static char payload[16];
    for (int round = 0; round < ROUNDS && !h_current_failed; round++) {
        chain c = {.pending = 0};
        pthread_mutex_init(&c.lock, NULL);
        pthread_cond_init(&c.cond, NULL);
        int peer = connected_to_raw(&c.s);
        CHECK(peer >= 0);
        close(peer); /* every send fails (EPIPE) as soon as the kernel has it */
        CHECK(sock_set_option(c.s, SOCK_OPTION_BATCH_SENDS, 1));
        sock_args *e = sock_args_new(on_chain_sent, &c);
        CHECK(sock_args_set_buffer(e, payload, sizeof payload));
        pthread_mutex_lock(&c.lock);
        CHECK(sock_send_async(c.s, e)); /* batched: pending */
        c.pending++;
        long close_after = 1 + round % 17;
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += 10;
        while (c.cycles < close_after && c.pending > c.callbacks &&
               pthread_cond_timedwait(&c.cond, &c.lock, &deadline) == 0)
            ;
        pthread_mutex_unlock(&c.lock);
        sock_close(c.s); /* while the chain runs */
        pthread_mutex_lock(&c.lock);
        while (c.callbacks < c.pending &&
               pthread_cond_timedwait(&c.cond, &c.lock, &deadline) == 0)
            ;
        long pending = c.pending, callbacks = c.callbacks;
        pthread_mutex_unlock(&c.lock);
        if (callbacks != pending)
            fprintf(stderr, "  round %d: %ld sends went pending, %ld callbacks came\n", round,
                    pending, callbacks);
        CHECK_EQ(callbacks, pending);
        sock_free(c.s); /* the last callback has returned: nothing touches the chain now */
        sock_args_free(e);
        pthread_mutex_destroy(&c.lock);
        pthread_cond_destroy(&c.cond);
    }
}

static void test_batched_sends_option_is_for_stream_sockets(void)
{
    CHECK(use_io_uring());
    sock *u = sock_create(SOCK_ADDRESS_FAMILY_INTER_NETWORK, SOCK_SOCKET_TYPE_DGRAM,
                          SOCK_PROTOCOL_TYPE_UDP);
    CHECK(u != NULL);
    CHECK_REJECTED(sock_set_option(u, SOCK_OPTION_BATCH_SENDS, 1), SOCK_STATUS_NOT_SUPPORTED);
    CHECK_REJECTED(sock_set_option(u, SOCK_OPTION_BATCH_SENDS, 2), SOCK_STATUS_INVALID_ARGUMENT);
    sock_free(u);
    sock *s = sock_create(SOCK_ADDRESS_FAMILY_INTER_NETWORK, SOCK_SOCKET_TYPE_STREAM,
                          SOCK_PROTOCOL_TYPE_TCP);
    CHECK(sock_set_option(s, SOCK_OPTION_BATCH_SENDS, 1));
    int64_t v = 0;
    CHECK(sock_get_option(s, SOCK_OPTION_BATCH_SENDS, &v));
    CHECK_EQ(v, 1);
    CHECK(sock_set_option(s, SOCK_OPTION_BATCH_SENDS, 0));
    CHECK(sock_get_option(s, SOCK_OPTION_BATCH_SENDS, &v));
    CHECK_EQ(v, 0);
    sock_close(s);
    CHECK_REJECTED(sock_set_option(s, SOCK_OPTION_BATCH_SENDS, 1), SOCK_STATUS_DISPOSED);
    sock_free(s);
}

int main(void)
{
    RUN(test_backend_is_chosen_before_start_and_reported);
    RUN(test_refused_io_uring_falls_back_to_epoll);
    if (!kernel_allows_io_uring()) {
        fprintf(stderr, "  (this kernel refuses io_uring: only the fallback is tested)\n");
        return h_finish("test_uring");
    }
    RUN(test_batched_sends_option_is_for_stream_sockets);
    RUN(test_batched_sends_of_many_sockets_arrive_whole_and_in_order);
    RUN(test_batched_sends_issued_from_callbacks_keep_their_order);
    RUN(test_flagged_sends_and_disconnect_keep_their_place_among_batched_sends);
    RUN(test_close_with_batches_in_the_kernel_completes_each_send_once);
    RUN(test_shutdown_with_batches_in_the_kernel_delivers_every_callback);
    RUN(test_a_reset_with_batches_in_the_kernel_fails_each_send_once);
    RUN(test_a_batched_send_of_more_buffers_than_iov_max_arrives_whole);
    RUN(test_sends_that_went_pending_resume_through_the_ring_in_order);
    RUN(test_more_batches_in_one_turn_than_the_submission_queue_holds);
    RUN(test_a_closed_listener_can_be_bound_again_at_once);
    RUN(test_work_a_callback_starts_in_the_submission_pass_is_done_before_the_reactor_sleeps);
    RUN(test_a_close_racing_batched_sends_from_callbacks_completes_each_once);
    return h_finish("test_uring");
}

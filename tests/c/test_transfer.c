/*
 * Transfer semantics over real loopback sockets: close with pending operations, FIFO
 * ordering of queued receives and sends, concurrent senders, huge and long buffer lists,
 * peer resets, callback re-entrancy, freeing args in flight, zero-length operations,
 * disconnect after queued sends, no SIGPIPE, and many sockets from many threads.
 *
 * Never sleeps for synchronisation: tests wait on completions (wait_for) or on blocking
 * POSIX peers (with a receive timeout so a broken library fails instead of hanging).
 */
#include "harness.h"

#include <sys/time.h>
#include <sys/uio.h>

#define PEER_TIMEOUT_S 10

/* ---- small helpers ---------------------------------------------------------- */

/* A byte of a position-dependent pattern (differs between 64 KiB blocks, and by seed). */
static uint8_t pat(uint64_t i, unsigned seed)
{
    return (uint8_t)(((i ^ (i >> 8) ^ (i >> 16) ^ (i >> 24)) * 31u) + seed * 101u + 7u);
}

static void fill_pat(uint8_t *p, size_t n, uint64_t start, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = pat(start + i, seed);
}

static void peer_timeout(int fd)
{
    struct timeval tv = {.tv_sec = PEER_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/*
 * A library socket connected to a blocking POSIX peer on 127.0.0.1; returns the peer's
 * descriptor (or -1). peer_rcvbuf > 0 shrinks the peer's receive buffer before the
 * handshake (set on the listening socket, which the accepted one inherits), so the
 * advertised window stays small and large sends go pending.
 */
static int raw_peer(sock **s, int peer_rcvbuf)
{
    int peer = connected_to_raw_sized(s, peer_rcvbuf);
    if (peer >= 0)
        peer_timeout(peer);
    return peer;
}


/*
 * A later point on the reactor: a pending accept's callback runs only once the reactor is
 * back in its event loop, so a batch of callbacks it was delivering (e.g. a duplicate
 * right behind one we saw) has been delivered by then. (Duplicates are also caught in the
 * library itself: debug builds check every delivery; see tests/engine.rs.)
 */
static int reactor_barrier(void)
{
    /* Only one Inline reactor delivers in order; under Pool dispatch nothing here is a
     * fence, and shutting the runtime down (the only one) would close the test's sockets. */
    if (!h_callbacks_in_order())
        return 1;
    char ep[64];
    sock *l = listener(0, ep, sizeof ep);
    CHECK_OR(l != NULL, 0);
    static waiter w;
    waiter_init(&w);
    sock_args *e = sock_args_new(on_completed, &w);
    int pending = sock_accept_async(l, e);
    CHECK_OR(pending, 0);
    int fd = raw_connect(endpoint_port(ep));
    CHECK_OR(fd >= 0, 0);
    int ok = wait_for(&w, 1);
    sock_free(sock_args_accept_socket(e));
    sock_args_free(e);
    sock_free(l);
    close(fd);
    waiter_destroy(&w);
    CHECK_OR(ok, 0);
    return 1;
}

/* Completion order, closing flag, and what each callback saw. */
static atomic_int g_order;
static pthread_mutex_t g_close_lock;
static int g_inside_close; /* guarded by g_close_lock (recursive) */

typedef struct {
    waiter w;
    int order;              /* g_order at the callback */
    int inside_close_seen;  /* the callback ran while the caller was inside sock_close */
    sock_args *args_seen;
    void *token_seen;
    size_t bytes_in_cb;
    int32_t error_in_cb;
} probe;

static void probe_init(probe *p)
{
    memset(p, 0, sizeof *p);
    waiter_init(&p->w);
    p->order = -1;
}

static void on_probe(sock *s, sock_args *e, void *token)
{
    probe *p = token;
    /* Recursive: a callback called from inside sock_close on the closing thread gets the
     * lock and sees the flag; one on the reactor waits until sock_close has returned. */
    pthread_mutex_lock(&g_close_lock);
    if (g_inside_close)
        p->inside_close_seen = 1;
    pthread_mutex_unlock(&g_close_lock);
    p->order = atomic_fetch_add(&g_order, 1);
    p->args_seen = e;
    p->token_seen = token;
    p->bytes_in_cb = sock_args_bytes_transferred(e);
    p->error_in_cb = sock_args_socket_error(e);
    on_completed(s, e, &p->w);
}

static void close_marked(sock *s)
{
    pthread_mutex_lock(&g_close_lock);
    g_inside_close = 1;
    sock_close(s);
    g_inside_close = 0;
    pthread_mutex_unlock(&g_close_lock);
}

/*
 * Reads from a blocking peer until EOF or an error, checking each byte against `expect`
 * (a concatenation of buffers). *got = bytes read; returns the final read's result (0 for
 * EOF, -1 with *err = errno), or -2 on a content mismatch.
 */
static int drain(int fd, const sock_buf *expect, size_t nexpect, size_t *got, int *err)
{
    static uint8_t buf[65536];
    size_t idx = 0, within = 0;
    *got = 0;
    *err = 0;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            *err = r < 0 ? errno : 0;
            return (int)r;
        }
        size_t p = 0;
        while (p < (size_t)r) {
            while (idx < nexpect && within == expect[idx].len) {
                idx++;
                within = 0;
            }
            if (idx == nexpect)
                return -2; /* more than was ever sent */
            size_t n = expect[idx].len - within;
            if (n > (size_t)r - p)
                n = (size_t)r - p;
            if (memcmp(buf + p, (uint8_t *)expect[idx].data + within, n) != 0)
                return -2;
            p += n;
            within += n;
        }
        *got += (size_t)r;
    }
}

/* A POSIX peer thread reading exactly `want` bytes, checked against `expect`. */
typedef struct {
    int fd;
    const sock_buf *expect;
    size_t nexpect;
    size_t want;
    int then_eof;   /* afterwards, read once more and record the result */
    size_t got;
    int mismatch;   /* 1 if a byte differed */
    size_t mismatch_at;
    int short_read; /* EOF or error before `want` */
    ssize_t eof_rc;
    int eof_errno;
} reader;

static void *reader_main(void *arg)
{
    reader *r = arg;
    size_t bufsize = 1 << 16;
    uint8_t *buf = malloc(bufsize);
    size_t idx = 0, within = 0;
    while (r->got < r->want) {
        size_t ask = r->want - r->got < bufsize ? r->want - r->got : bufsize;
        ssize_t n = read(r->fd, buf, ask);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            r->short_read = 1;
            break;
        }
        size_t p = 0;
        while (p < (size_t)n && !r->mismatch) {
            while (idx < r->nexpect && within == r->expect[idx].len) {
                idx++;
                within = 0;
            }
            if (idx == r->nexpect) {
                r->mismatch = 1;
                r->mismatch_at = r->got + p;
                break;
            }
            size_t c = r->expect[idx].len - within;
            if (c > (size_t)n - p)
                c = (size_t)n - p;
            if (memcmp(buf + p, (uint8_t *)r->expect[idx].data + within, c) != 0) {
                r->mismatch = 1;
                r->mismatch_at = r->got + p;
                break;
            }
            p += c;
            within += c;
        }
        r->got += (size_t)n;
        if (r->mismatch)
            break;
    }
    if (r->then_eof && !r->short_read && !r->mismatch) {
        uint8_t b;
        do {
            r->eof_rc = read(r->fd, &b, 1);
        } while (r->eof_rc < 0 && errno == EINTR);
        r->eof_errno = r->eof_rc < 0 ? errno : 0;
    }
    free(buf);
    return NULL;
}

/* Receives exactly n bytes on a library socket (whichever way each receive completes). */
static int lib_recv_exact(sock *s, sock_args *e, waiter *w, uint8_t *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        CHECK_OR(sock_args_set_buffer(e, buf + got, n - got), 0);
        int32_t err = complete(sock_receive_async, s, e, w, NULL);
        CHECK_OR(err == SOCK_SOCKET_ERROR_SUCCESS, 0);
        size_t b = sock_args_bytes_transferred(e);
        CHECK_OR(b > 0 && b <= n - got, 0);
        got += b;
    }
    return 1;
}

/* ---- 1. close with pending operations ------------------------------------- */

static void test_close_aborts_pending_receive_and_send_and_resets_peer(void)
{
    sock *s;
    int peer = raw_peer(&s, 4096);
    CHECK(peer >= 0);
    CHECK(sock_set_option(s, SOCK_OPTION_SEND_BUFFER_SIZE, 4096));

    static probe pr, ps;
    probe_init(&pr);
    probe_init(&ps);
    static uint8_t inbox[16];
    sock_args *re = sock_args_new(on_probe, &pr);
    CHECK(sock_args_set_buffer(re, inbox, sizeof inbox));
    CHECK(sock_receive_async(s, re)); /* nothing sent: pending */

    size_t total = 8u << 20;
    uint8_t *data = malloc(total);
    fill_pat(data, total, 0, 1);
    sock_args *se = sock_args_new(on_probe, &ps);
    CHECK(sock_args_set_buffer(se, data, total));
    CHECK(sock_send_async(s, se)); /* the peer is not reading: pending */

    pthread_t self = pthread_self();
    close_marked(s);
    CHECK(wait_for(&pr.w, 1));
    CHECK(wait_for(&ps.w, 1));

    CHECK_EQ(pr.w.error, SOCK_SOCKET_ERROR_OPERATION_ABORTED);
    CHECK_EQ(pr.w.operation, SOCK_ASYNC_OPERATION_RECEIVE);
    CHECK_EQ(pr.w.bytes, 0);
    CHECK(!pthread_equal(pr.w.thread, self));
    CHECK_EQ(pr.inside_close_seen, 0);
    CHECK(pr.w.socket == s);

    CHECK_EQ(ps.w.error, SOCK_SOCKET_ERROR_OPERATION_ABORTED);
    CHECK_EQ(ps.w.operation, SOCK_ASYNC_OPERATION_SEND);
    CHECK(!pthread_equal(ps.w.thread, self));
    CHECK_EQ(ps.inside_close_seen, 0);
    size_t sent = ps.w.bytes;
    CHECK(sent > 0);
    CHECK(sent < total);
    CHECK_EQ(sock_args_bytes_transferred(se), sent);

    /* Later operations are rejected as Disposed; closing again does nothing. */
    CHECK_REJECTED(sock_receive_async(s, re), SOCK_STATUS_DISPOSED);
    CHECK_REJECTED(sock_send_async(s, se), SOCK_STATUS_DISPOSED);
    sock_args *de = sock_args_new(on_completed, &pr.w);
    CHECK_REJECTED(sock_disconnect_async(s, de), SOCK_STATUS_DISPOSED);
    sock_args_free(de);
    CHECK_REJECTED(sock_shutdown(s, SOCK_SHUTDOWN_HOW_SEND), SOCK_STATUS_DISPOSED);
    sock_close(s);
    CHECK_EQ(sock_last_status(), SOCK_STATUS_OK);

    /* The peer gets a prefix of what the send had handed to the kernel, then a reset. */
    sock_buf expect = {data, sent};
    size_t got;
    int err;
    int rc = drain(peer, &expect, 1, &got, &err);
    CHECK(rc != -2);
    CHECK(got <= sent);
    CHECK_EQ(rc, -1);
    CHECK_EQ(err, ECONNRESET);

    CHECK(reactor_barrier());
    CHECK_EQ(waiter_count(&pr.w), 1); /* exactly once */
    CHECK_EQ(waiter_count(&ps.w), 1);

    close(peer);
    sock_args_free(re);
    sock_args_free(se);
    sock_free(s);
    free(data);
    waiter_destroy(&pr.w);
    waiter_destroy(&ps.w);
}

static void test_close_aborts_pending_accept(void)
{
    char ep[64];
    sock *l = listener(0, ep, sizeof ep);
    CHECK(l != NULL);
    static probe p;
    probe_init(&p);
    sock_args *e = sock_args_new(on_probe, &p);
    CHECK(sock_accept_async(l, e)); /* nobody connects: pending */
    close_marked(l);
    CHECK(wait_for(&p.w, 1));
    CHECK_EQ(p.w.error, SOCK_SOCKET_ERROR_OPERATION_ABORTED);
    CHECK_EQ(p.w.operation, SOCK_ASYNC_OPERATION_ACCEPT);
    CHECK(p.w.accepted == NULL);
    CHECK(!pthread_equal(p.w.thread, pthread_self()));
    CHECK_EQ(p.inside_close_seen, 0);
    CHECK_REJECTED(sock_accept_async(l, e), SOCK_STATUS_DISPOSED);
    CHECK_REJECTED(sock_listen(l, 4), SOCK_STATUS_DISPOSED);
    CHECK(reactor_barrier());
    CHECK_EQ(waiter_count(&p.w), 1);
    sock_args_free(e);
    sock_free(l);
    waiter_destroy(&p.w);
}

static void test_close_after_shutdown_send_is_graceful(void)
{
    sock *s;
    int peer = raw_peer(&s, 0);
    CHECK(peer >= 0);
    /* Some data first, which the peer must get whole before EOF. */
    uint8_t msg[] = "last words";
    static waiter ws;
    waiter_init(&ws);
    sock_args *se = sock_args_new(on_completed, &ws);
    CHECK(sock_args_set_buffer(se, msg, sizeof msg));
    CHECK_EQ(complete(sock_send_async, s, se, &ws, NULL), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(sock_args_bytes_transferred(se), sizeof msg);
    CHECK(sock_shutdown(s, SOCK_SHUTDOWN_HOW_SEND));

    static probe p;
    probe_init(&p);
    static uint8_t inbox[8];
    sock_args *re = sock_args_new(on_probe, &p);
    CHECK(sock_args_set_buffer(re, inbox, sizeof inbox));
    CHECK(sock_receive_async(s, re));
    close_marked(s);
    CHECK(wait_for(&p.w, 1));
    CHECK_EQ(p.w.error, SOCK_SOCKET_ERROR_OPERATION_ABORTED);
    CHECK_EQ(p.inside_close_seen, 0);
    CHECK(!pthread_equal(p.w.thread, pthread_self()));

    uint8_t got[sizeof msg];
    CHECK(read_exact(peer, got, sizeof msg));
    CHECK(memcmp(got, msg, sizeof msg) == 0);
    uint8_t b;
    ssize_t r = read(peer, &b, 1);
    CHECK_EQ(r, 0); /* EOF, not a reset */

    close(peer);
    sock_args_free(re);
    sock_args_free(se);
    sock_free(s);
    waiter_destroy(&p.w);
    waiter_destroy(&ws);
}

/* ---- 2. FIFO ------------------------------------------------------------------ */

static void test_queued_receives_complete_in_issue_order(void)
{
    sock *s;
    int peer = raw_peer(&s, 0);
    CHECK(peer >= 0);
    enum { N = 8 };
    static probe p[N];
    sock_args *e[N];
    static uint8_t bufs[N][1];
    memset(bufs, 0, sizeof bufs);
    int base = atomic_load(&g_order);
    for (int i = 0; i < N; i++) {
        probe_init(&p[i]);
        e[i] = sock_args_new(on_probe, &p[i]);
        CHECK(sock_args_set_buffer(e[i], bufs[i], 1));
        CHECK(sock_receive_async(s, e[i])); /* nothing there yet: each goes pending */
    }
    const char *text = "ABCDEFGH";
    CHECK_EQ(write(peer, text, N), N);
    for (int i = 0; i < N; i++) {
        CHECK(wait_for(&p[i].w, 1));
        CHECK_EQ(p[i].w.error, SOCK_SOCKET_ERROR_SUCCESS);
        CHECK_EQ(p[i].w.bytes, 1);
    }
    for (int i = 0; i < N; i++) {
        CHECK_EQ(bufs[i][0], text[i]);
        if (h_callbacks_in_order())
            CHECK_EQ(p[i].order - base, i); /* callbacks ran in issue order */
    }
    close(peer);
    for (int i = 0; i < N; i++) {
        sock_args_free(e[i]);
        waiter_destroy(&p[i].w);
    }
    sock_free(s);
}

static void test_queued_large_sends_arrive_whole_in_issue_order(void)
{
    sock *s;
    int peer = raw_peer(&s, 4096);
    CHECK(peer >= 0);
    CHECK(sock_set_option(s, SOCK_OPTION_SEND_BUFFER_SIZE, 4096));
    enum { N = 4 };
    size_t size = 1u << 20;
    static probe p[N];
    sock_args *e[N];
    sock_buf expect[N];
    int base = atomic_load(&g_order);
    for (int i = 0; i < N; i++) {
        expect[i].data = malloc(size);
        expect[i].len = size;
        fill_pat(expect[i].data, size, 0, 10 + (unsigned)i);
    }
    for (int i = 0; i < N; i++) {
        probe_init(&p[i]);
        e[i] = sock_args_new(on_probe, &p[i]);
        CHECK(sock_args_set_buffer(e[i], expect[i].data, size));
        CHECK(sock_send_async(s, e[i])); /* 1 MiB through a 4 KiB window: pending */
    }
    reader r = {.fd = peer, .expect = expect, .nexpect = N, .want = N * size};
    pthread_t t;
    pthread_create(&t, NULL, reader_main, &r);
    pthread_join(t, NULL);
    CHECK(!r.short_read);
    CHECK_EQ(r.mismatch, 0);
    CHECK_EQ(r.got, N * size);
    for (int i = 0; i < N; i++) {
        CHECK(wait_for(&p[i].w, 1));
        CHECK_EQ(p[i].w.error, SOCK_SOCKET_ERROR_SUCCESS);
        CHECK_EQ(p[i].w.bytes, size);
        /* Pool dispatch may run one socket's callbacks in any order (the data order is
         * checked above either way); on io_uring sends that finish together in one
         * gathered send are then delivered together. */
        if (h_callbacks_in_order())
            CHECK_EQ(p[i].order - base, i);
    }
    close(peer);
    for (int i = 0; i < N; i++) {
        sock_args_free(e[i]);
        waiter_destroy(&p[i].w);
        free(expect[i].data);
    }
    sock_free(s);
}

/* ---- 3. concurrent senders ---------------------------------------------------- */

enum { CS_MAX_THREADS = 8 };

/*
 * One sender thread. Everything a pending send may still touch (args, waiter, record)
 * lives here, owned by the test, so a send that never completes can be aborted by closing
 * the socket after the threads are gone.
 */
typedef struct {
    sock *s;
    uint32_t id;
    uint32_t sends;
    size_t record;
    sock_args *e;
    waiter w;
    uint8_t *rec;
    int pending; /* sends that returned true (each owes one callback) */
    int failures;
    char what[160];
} cs_sender;

static void cs_fill(uint8_t *rec, size_t size, uint32_t id, uint32_t seq)
{
    memcpy(rec, &id, 4);
    memcpy(rec + 4, &seq, 4);
    for (size_t i = 8; i < size; i++)
        rec[i] = (uint8_t)(id * 59u + seq * 7u + i);
}

static void *cs_sender_main(void *arg)
{
    cs_sender *c = arg;
    for (uint32_t seq = 0; seq < c->sends; seq++) {
        cs_fill(c->rec, c->record, c->id, seq);
        if (!sock_args_set_buffer(c->e, c->rec, c->record)) {
            c->failures++;
            snprintf(c->what, sizeof c->what, "set_buffer status %d", sock_last_status());
            break;
        }
        /* Wait for the callback before the args (and rec) are reused. */
        int before = waiter_count(&c->w);
        bool pending = sock_send_async(c->s, c->e);
        int32_t status = sock_last_status();
        if (!pending && status != SOCK_STATUS_OK) {
            c->failures++;
            snprintf(c->what, sizeof c->what, "send %u rejected: status %d", seq, status);
            break;
        }
        if (pending) {
            c->pending++;
            if (!wait_for(&c->w, before + 1)) {
                c->failures++;
                snprintf(c->what, sizeof c->what,
                         "send %u of %zu bytes went pending and never completed", seq,
                         c->record);
                break;
            }
        }
        int32_t err = sock_args_socket_error(c->e);
        if (err != SOCK_SOCKET_ERROR_SUCCESS || sock_args_bytes_transferred(c->e) != c->record) {
            c->failures++;
            snprintf(c->what, sizeof c->what, "send %u (%s): error %d bytes %zu", seq,
                     pending ? "pending" : "at once", err, sock_args_bytes_transferred(c->e));
            break;
        }
    }
    return NULL;
}

typedef struct {
    int fd;
    int threads;
    uint32_t sends;
    size_t record;
    int bad;
    char what[160];
} cs_checker;

static void *cs_checker_main(void *arg)
{
    cs_checker *k = arg;
    uint32_t next[CS_MAX_THREADS] = {0};
    uint8_t *rec = malloc(k->record), *want = malloc(k->record);
    for (uint32_t n = 0; n < (uint32_t)k->threads * k->sends; n++) {
        if (!read_exact(k->fd, rec, k->record)) {
            k->bad = 1;
            snprintf(k->what, sizeof k->what, "short read at record %u", n);
            break;
        }
        uint32_t id, seq;
        memcpy(&id, rec, 4);
        memcpy(&seq, rec + 4, 4);
        if (id >= (uint32_t)k->threads || seq != next[id]) {
            k->bad = 1;
            snprintf(k->what, sizeof k->what, "record %u: thread %u seq %u (expected %u)", n,
                     id, seq, id < (uint32_t)k->threads ? next[id] : 0);
            break;
        }
        cs_fill(want, k->record, id, seq);
        if (memcmp(rec, want, k->record) != 0) {
            k->bad = 1;
            snprintf(k->what, sizeof k->what, "record %u (thread %u seq %u) is broken", n,
                     id, seq);
            break;
        }
        next[id]++;
    }
    free(rec);
    free(want);
    return NULL;
}

/*
 * `threads` threads each send `sends` records of `record` bytes on one socket; a POSIX
 * peer checks every record is whole and each thread's records come in order. Returns 1 if
 * all went well; failures are printed.
 */
static int concurrent_sends(int threads, uint32_t sends, size_t record, int sndbuf,
                            int peer_rcvbuf)
{
    sock *s;
    int peer = raw_peer(&s, peer_rcvbuf);
    CHECK_OR(peer >= 0, 0);
    if (sndbuf)
        CHECK_OR(sock_set_option(s, SOCK_OPTION_SEND_BUFFER_SIZE, sndbuf), 0);
    cs_checker k = {.fd = peer, .threads = threads, .sends = sends, .record = record};
    pthread_t kt, st[CS_MAX_THREADS];
    static cs_sender c[CS_MAX_THREADS];
    pthread_create(&kt, NULL, cs_checker_main, &k);
    for (int i = 0; i < threads; i++) {
        c[i] = (cs_sender){.s = s, .id = (uint32_t)i, .sends = sends, .record = record};
        waiter_init(&c[i].w);
        c[i].e = sock_args_new(on_completed, &c[i].w);
        c[i].rec = malloc(record);
        pthread_create(&st[i], NULL, cs_sender_main, &c[i]);
    }
    for (int i = 0; i < threads; i++)
        pthread_join(st[i], NULL);
    pthread_join(kt, NULL);
    int ok = !k.bad;
    for (int i = 0; i < threads; i++) {
        if (c[i].failures) {
            fprintf(stderr, "    sender %d: %s\n", i, c[i].what);
            ok = 0;
        }
    }
    if (k.bad)
        fprintf(stderr, "    peer: %s\n", k.what);
    /* Closing aborts any send that never completed; its callback is still owed. */
    sock_free(s);
    close(peer);
    for (int i = 0; i < threads; i++) {
        if (!wait_for(&c[i].w, c[i].pending)) {
            fprintf(stderr, "    sender %d: a pending send got no callback even after close\n",
                    i);
            ok = 0;
            continue; /* leave its memory alone: a callback may still come */
        }
        sock_args_free(c[i].e);
        waiter_destroy(&c[i].w);
        free(c[i].rec);
    }
    return ok;
}

static void test_concurrent_sends_from_threads_never_interleave(void)
{
    CHECK(concurrent_sends(4, 200, 1000, 4096, 8192));
}

/* The same with small records and a small send buffer, several times over: a mix of sends
 * finishing on their own thread and sends queued behind them. */
static void test_concurrent_small_sends_from_threads_all_complete(void)
{
    /* Rounds until 2 s have passed (at least 3, at most 100): a stress test whose length
     * does not depend on how slow the machine or the tool running it is. */
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int round = 0;
    do {
        CHECK(concurrent_sends(4, 1000, 100, 4096, 0));
        round++;
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while (round < 100 && (round < 3 || (t.tv_sec - t0.tv_sec) * 1000000000L +
                                                  (t.tv_nsec - t0.tv_nsec) < 2000000000L));
    if (getenv("TRANSFER_VERBOSE"))
        fprintf(stderr, "    %d rounds\n", round);
}

/* ---- 4. 64 MiB from a buffer list ---------------------------------------------- */

static void test_64mib_send_from_buffer_list(void)
{
    sock *s;
    int peer = raw_peer(&s, 0);
    CHECK(peer >= 0);
    enum { ENTRIES = 1024 };
    size_t entry = 64u << 10, total = (size_t)ENTRIES * entry;
    sock_buf *list = malloc(ENTRIES * sizeof *list);
    for (size_t k = 0; k < ENTRIES; k++) {
        list[k].data = malloc(entry);
        list[k].len = entry;
        fill_pat(list[k].data, entry, k * entry, 3);
    }
    static waiter w;
    waiter_init(&w);
    sock_args *e = sock_args_new(on_completed, &w);
    CHECK(sock_args_set_buffer_list(e, list, ENTRIES));
    reader r = {.fd = peer, .expect = list, .nexpect = ENTRIES, .want = total,
                .then_eof = 1};
    pthread_t t;
    pthread_create(&t, NULL, reader_main, &r);
    bool pending = sock_send_async(s, e);
    int32_t status = sock_last_status();
    int done = pending ? wait_for(&w, 1) : status == SOCK_STATUS_OK;
    if (done) /* the peer sees EOF right after the list */
        sock_shutdown(s, SOCK_SHUTDOWN_HOW_SEND);
    pthread_join(t, NULL); /* before any check can return: the reader uses this frame */
    CHECK(pending || status == SOCK_STATUS_OK);
    CHECK(done);
    CHECK_EQ(sock_args_socket_error(e), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(sock_args_bytes_transferred(e), total);
    CHECK_EQ(sock_args_last_operation(e), SOCK_ASYNC_OPERATION_SEND);
    CHECK(!r.short_read);
    if (r.mismatch)
        fprintf(stderr, "    first wrong byte at %zu\n", r.mismatch_at);
    CHECK_EQ(r.mismatch, 0);
    CHECK_EQ(r.got, total);
    CHECK_EQ(r.eof_rc, 0); /* nothing more than the list */
    close(peer);
    sock_args_free(e);
    sock_free(s);
    waiter_destroy(&w);
    for (size_t k = 0; k < ENTRIES; k++)
        free(list[k].data);
    free(list);
}

/* ---- 5. past IOV_MAX ------------------------------------------------------------- */

/* Sends a list of `ENTRIES` small entries (some empty, some NULL with length 0) through a
 * small window, and checks the peer gets every byte in order. */
static void send_list_arrives_whole(size_t ENTRIES)
{
    sock *s;
    int peer = raw_peer(&s, 4096);
    CHECK(peer >= 0);
    CHECK(sock_set_option(s, SOCK_OPTION_SEND_BUFFER_SIZE, 4096));
    sock_buf *list = calloc(ENTRIES, sizeof *list);
    size_t total = 0;
    for (size_t k = 0; k < ENTRIES; k++) {
        size_t len = (k % 7 == 3 || k % 11 == 0) ? 0 : (k * 37) % 97 + 1;
        if (len == 0 && k % 2 == 0) {
            list[k].data = NULL; /* NULL with length 0 is allowed */
        } else {
            list[k].data = malloc(len ? len : 1);
            fill_pat(list[k].data, len, total, 5);
        }
        list[k].len = len;
        total += len;
    }
    static waiter w;
    waiter_init(&w);
    sock_args *e = sock_args_new(on_completed, &w);
    CHECK(sock_args_set_buffer_list(e, list, ENTRIES));
    bool pending = sock_send_async(s, e);
    CHECK(pending || sock_last_status() == SOCK_STATUS_OK);
    reader r = {.fd = peer, .expect = list, .nexpect = ENTRIES, .want = total};
    pthread_t t;
    pthread_create(&t, NULL, reader_main, &r);
    pthread_join(t, NULL);
    if (pending)
        CHECK(wait_for(&w, 1));
    CHECK_EQ(sock_args_socket_error(e), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(sock_args_bytes_transferred(e), total);
    CHECK(!r.short_read);
    CHECK_EQ(r.mismatch, 0);
    CHECK_EQ(r.got, total);
    close(peer);
    sock_args_free(e);
    sock_free(s);
    waiter_destroy(&w);
    for (size_t k = 0; k < ENTRIES; k++)
        free(list[k].data);
    free(list);
}

static void test_send_from_5000_entry_list_with_empty_entries(void)
{
    send_list_arrives_whole(5000);
}

/* Issue 4's integer edge: far past IOV_MAX, still one operation, still whole. */
static void test_send_from_100000_entry_list(void)
{
    send_list_arrives_whole(100000);
}

static void test_receive_into_3000_one_byte_entries(void)
{
    sock *s;
    int peer = raw_peer(&s, 0);
    CHECK(peer >= 0);
    enum { N = 3000 };
    static uint8_t sent[N], got[N];
    fill_pat(sent, N, 0, 9);
    memset(got, 0, sizeof got);
    sock_buf *list = malloc(N * sizeof *list);
    for (size_t i = 0; i < N; i++)
        list[i] = (sock_buf){&got[i], 1};
    CHECK(write(peer, sent, N) == N);
    static waiter w;
    waiter_init(&w);
    sock_args *e = sock_args_new(on_completed, &w);
    size_t have = 0;
    while (have < N) {
        CHECK(sock_args_set_buffer_list(e, list + have, N - have));
        CHECK_EQ(complete(sock_receive_async, s, e, &w, NULL), SOCK_SOCKET_ERROR_SUCCESS);
        size_t n = sock_args_bytes_transferred(e);
        CHECK(n > 0 && n <= N - have);
        have += n;
    }
    CHECK_EQ(have, N);
    CHECK(memcmp(got, sent, N) == 0);
    close(peer);
    sock_args_free(e);
    sock_free(s);
    waiter_destroy(&w);
    free(list);
}

/* ---- 6. peer reset -------------------------------------------------------------- */

static void hard_close(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

static void test_peer_reset_fails_pending_send(void)
{
    sock *s;
    int peer = raw_peer(&s, 4096);
    CHECK(peer >= 0);
    CHECK(sock_set_option(s, SOCK_OPTION_SEND_BUFFER_SIZE, 4096));
    size_t total = 8u << 20;
    uint8_t *data = malloc(total);
    fill_pat(data, total, 0, 2);
    static probe p;
    probe_init(&p);
    sock_args *e = sock_args_new(on_probe, &p);
    CHECK(sock_args_set_buffer(e, data, total));
    CHECK(sock_send_async(s, e));
    hard_close(peer);
    CHECK(wait_for(&p.w, 1));
    CHECK(p.w.error == SOCK_SOCKET_ERROR_CONNECTION_RESET ||
          p.w.error == SOCK_SOCKET_ERROR_SHUTDOWN);
    CHECK(p.w.bytes < total);
    CHECK(!pthread_equal(p.w.thread, pthread_self()));
    CHECK(reactor_barrier());
    CHECK_EQ(waiter_count(&p.w), 1);
    sock_args_free(e);
    sock_free(s);
    free(data);
    waiter_destroy(&p.w);
}

static void test_peer_reset_fails_pending_receive(void)
{
    sock *s;
    int peer = raw_peer(&s, 0);
    CHECK(peer >= 0);
    static probe p;
    probe_init(&p);
    static uint8_t inbox[32];
    sock_args *e = sock_args_new(on_probe, &p);
    CHECK(sock_args_set_buffer(e, inbox, sizeof inbox));
    CHECK(sock_receive_async(s, e));
    hard_close(peer);
    CHECK(wait_for(&p.w, 1));
    CHECK_EQ(p.w.error, SOCK_SOCKET_ERROR_CONNECTION_RESET);
    CHECK_EQ(p.w.bytes, 0);
    CHECK(reactor_barrier());
    CHECK_EQ(waiter_count(&p.w), 1);
    sock_args_free(e);
    sock_free(s);
    waiter_destroy(&p.w);
}

/* ---- 7. callback re-entrancy ---------------------------------------------------- */

enum { PP_ROUNDS = 1000 };

struct pp;
typedef struct {
    struct pp *pp;
    int is_client;
    sock *s;
    sock_args *recv_args, *send_args;
    uint8_t in[4], out[4];
    size_t have;
} pp_side;

typedef struct pp {
    pp_side client, server;
    pthread_t test_thread;
    atomic_int finished; /* the last round trip is done: aborts are expected now */
    int rounds;
    int failures;
    char what[160];
    waiter done;    /* one signal: finished or failed */
    waiter aborted; /* receives aborted at the end */
} pp;

static void pp_fail(pp *g, const char *what, long a, long b)
{
    if (!g->failures++) {
        snprintf(g->what, sizeof g->what, "%s (%ld, %ld)", what, a, b);
        waiter_signal(&g->done);
    }
}

static void pp_on_send(sock *s, sock_args *e, void *token)
{
    (void)s;
    pp_side *side = token;
    if (sock_args_socket_error(e) != 0 || sock_args_bytes_transferred(e) != 4)
        pp_fail(side->pp, "send completed badly", sock_args_socket_error(e),
                (long)sock_args_bytes_transferred(e));
}

static int pp_send(pp_side *side, uint32_t value)
{
    memcpy(side->out, &value, 4);
    if (!sock_args_set_buffer(side->send_args, side->out, 4)) {
        pp_fail(side->pp, "set_buffer on send args (status, side)", sock_last_status(),
                side->is_client);
        return 0;
    }
    if (sock_send_async(side->s, side->send_args))
        return 1;
    if (sock_last_status() != SOCK_STATUS_OK ||
        sock_args_socket_error(side->send_args) != 0 ||
        sock_args_bytes_transferred(side->send_args) != 4) {
        pp_fail(side->pp, "send", sock_last_status(),
                sock_args_socket_error(side->send_args));
        return 0;
    }
    return 1;
}

static void pp_on_recv(sock *s, sock_args *e, void *token)
{
    pp_side *side = token;
    pp *g = side->pp;
    if (pthread_equal(pthread_self(), g->test_thread))
        pp_fail(g, "callback on the test thread", 0, 0);
    for (;;) {
        int32_t err = sock_args_socket_error(e);
        size_t n = sock_args_bytes_transferred(e);
        if (err == SOCK_SOCKET_ERROR_OPERATION_ABORTED && atomic_load(&g->finished)) {
            waiter_signal(&g->aborted);
            return;
        }
        if (err != 0 || n == 0) {
            pp_fail(g, "receive completed badly", err, (long)n);
            return;
        }
        side->have += n;
        if (side->have == 4) {
            side->have = 0;
            uint32_t v;
            memcpy(&v, side->in, 4);
            if (side->is_client) {
                if (v != (uint32_t)g->rounds * 2 + 1) {
                    pp_fail(g, "client got the wrong value", v, g->rounds * 2 + 1);
                    return;
                }
                g->rounds++;
                if (g->rounds == PP_ROUNDS) {
                    atomic_store(&g->finished, 1);
                    waiter_signal(&g->done);
                    return; /* no receive re-issued on the client */
                }
                if (!pp_send(side, v + 1))
                    return;
            } else {
                if (!pp_send(side, v + 1)) /* the echo, incremented */
                    return;
            }
        }
        /* Re-issue on the same args, from inside its own callback. */
        if (!sock_args_set_buffer(e, side->in + side->have, 4 - side->have)) {
            pp_fail(g, "set_buffer in callback", sock_last_status(), 0);
            return;
        }
        if (sock_receive_async(s, e))
            return; /* pending: this callback runs again later */
        if (sock_last_status() == SOCK_STATUS_DISPOSED && atomic_load(&g->finished)) {
            /* The test closed the server while this callback (on another worker, under
             * Pool dispatch) was still re-arming: a start racing a close is rejected. */
            waiter_signal(&g->aborted);
            return;
        }
        if (sock_last_status() != SOCK_STATUS_OK) {
            pp_fail(g, "receive rejected in callback", sock_last_status(), 0);
            return;
        }
        /* Completed at once: handle it here. */
    }
}

static void test_ping_pong_driven_from_callbacks(void)
{
    static pp g; /* static: the callbacks may outlive a failed test's stack frame */
    memset(&g, 0, sizeof g);
    waiter_init(&g.done);
    waiter_init(&g.aborted);
    g.test_thread = pthread_self();
    sock *c, *sv;
    CHECK(connected_pair(&c, &sv));
    CHECK(sock_set_option(c, SOCK_OPTION_NO_DELAY, 1));
    CHECK(sock_set_option(sv, SOCK_OPTION_NO_DELAY, 1));
    pp_side *sides[2] = {&g.client, &g.server};
    sock *socks[2] = {c, sv};
    for (int i = 0; i < 2; i++) {
        pp_side *d = sides[i];
        d->pp = &g;
        d->is_client = i == 0;
        d->s = socks[i];
        d->recv_args = sock_args_new(pp_on_recv, d);
        d->send_args = sock_args_new(pp_on_send, d);
        CHECK(sock_args_set_buffer(d->recv_args, d->in, 4));
        CHECK(sock_receive_async(d->s, d->recv_args));
    }
    /* The first ping goes out from this thread with args of its own: the client's send
     * args belong to its callbacks, and this send may still be finishing on this thread
     * when the echo is already being handled on the reactor. */
    static uint8_t first[4]; /* all zero: value 0 */
    static waiter wk;
    waiter_init(&wk);
    sock_args *kick = sock_args_new(on_completed, &wk);
    CHECK(sock_args_set_buffer(kick, first, 4));
    CHECK_EQ(complete(sock_send_async, c, kick, &wk, NULL), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(sock_args_bytes_transferred(kick), 4);
    sock_args_free(kick);
    waiter_destroy(&wk);
    CHECK(wait_for(&g.done, 1));
    if (g.failures)
        fprintf(stderr, "    %s\n", g.what);
    CHECK_EQ(g.failures, 0);
    CHECK_EQ(g.rounds, PP_ROUNDS);
    /* The server's receive is still pending: closing aborts it through its callback. */
    sock_close(sv);
    CHECK(wait_for(&g.aborted, 1));
    sock_close(c);
    CHECK(reactor_barrier());
    CHECK_EQ(g.failures, 0);
    CHECK_EQ(waiter_count(&g.aborted), 1);
    for (int i = 0; i < 2; i++) {
        sock_args_free(sides[i]->recv_args);
        sock_args_free(sides[i]->send_args);
    }
    sock_free(c);
    sock_free(sv);
    waiter_destroy(&g.done);
    waiter_destroy(&g.aborted);
}

typedef struct {
    waiter w;
    uint8_t byte;
    int32_t error;
    size_t bytes;
} self_destruct;

static void on_close_and_free_everything(sock *s, sock_args *e, void *token)
{
    self_destruct *d = token;
    d->error = sock_args_socket_error(e);
    d->bytes = sock_args_bytes_transferred(e);
    sock_close(s);
    sock_args_free(e);
    sock_free(s);
    waiter_signal(&d->w);
}

static void test_callback_closes_socket_and_frees_args_and_socket(void)
{
    sock *s;
    int peer = raw_peer(&s, 0);
    CHECK(peer >= 0);
    static self_destruct d;
    memset(&d, 0, sizeof d);
    waiter_init(&d.w);
    sock_args *e1 = sock_args_new(on_close_and_free_everything, &d);
    CHECK(sock_args_set_buffer(e1, &d.byte, 1));
    CHECK(sock_receive_async(s, e1));
    /* A second receive queued behind it: aborted when the first callback closes. */
    static probe p2;
    probe_init(&p2);
    static uint8_t b2;
    b2 = 0;
    sock_args *e2 = sock_args_new(on_probe, &p2);
    CHECK(sock_args_set_buffer(e2, &b2, 1));
    CHECK(sock_receive_async(s, e2));
    CHECK_EQ(write(peer, "Q", 1), 1);
    CHECK(wait_for(&d.w, 1));
    CHECK_EQ(d.error, SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(d.bytes, 1);
    CHECK_EQ(d.byte, 'Q');
    CHECK(wait_for(&p2.w, 1));
    CHECK_EQ(p2.w.error, SOCK_SOCKET_ERROR_OPERATION_ABORTED);
    CHECK_EQ(p2.w.bytes, 0);
    /* Something was aborted and sending was not shut down: the peer sees a reset. */
    uint8_t b;
    errno = 0;
    CHECK_EQ(read(peer, &b, 1), -1);
    CHECK_EQ(errno, ECONNRESET);
    CHECK(reactor_barrier());
    CHECK_EQ(waiter_count(&d.w), 1);
    CHECK_EQ(waiter_count(&p2.w), 1);
    close(peer);
    sock_args_free(e2);
    waiter_destroy(&d.w);
    waiter_destroy(&p2.w);
}

/* ---- 8. sock_args_free while in flight --------------------------------------------- */

static void test_args_freed_in_flight_still_completes_once(void)
{
    sock *s;
    int peer = raw_peer(&s, 0);
    CHECK(peer >= 0);
    static probe p;
    probe_init(&p);
    static uint8_t inbox[16];
    sock_args *e = sock_args_new(on_probe, &p);
    CHECK(sock_args_set_buffer(e, inbox, sizeof inbox));
    CHECK(sock_receive_async(s, e));
    sock_args_free(e); /* in flight: takes effect after the callback */
    CHECK_EQ(sock_last_status(), SOCK_STATUS_OK);
    CHECK_EQ(write(peer, "hello", 5), 5);
    CHECK(wait_for(&p.w, 1));
    CHECK(p.args_seen == e);      /* the same args, valid during the callback */
    CHECK(p.token_seen == &p);
    CHECK_EQ(p.bytes_in_cb, 5);
    CHECK_EQ(p.error_in_cb, SOCK_SOCKET_ERROR_SUCCESS);
    CHECK(memcmp(inbox, "hello", 5) == 0);

    /* The same again, but the operation ends by being aborted. */
    static probe q;
    probe_init(&q);
    sock_args *f = sock_args_new(on_probe, &q);
    CHECK(sock_args_set_buffer(f, inbox, sizeof inbox));
    CHECK(sock_receive_async(s, f));
    sock_args_free(f);
    sock_close(s);
    CHECK(wait_for(&q.w, 1));
    CHECK(q.args_seen == f);
    CHECK_EQ(q.error_in_cb, SOCK_SOCKET_ERROR_OPERATION_ABORTED);
    CHECK(reactor_barrier());
    CHECK_EQ(waiter_count(&p.w), 1);
    CHECK_EQ(waiter_count(&q.w), 1);
    close(peer);
    sock_free(s);
    waiter_destroy(&p.w);
    waiter_destroy(&q.w);
}

/* ---- 9. zero-length operations ------------------------------------------------------ */

static void test_zero_length_sends_complete_at_once(void)
{
    sock *s;
    int peer = raw_peer(&s, 0);
    CHECK(peer >= 0);
    static waiter w;
    waiter_init(&w);
    sock_args *e = sock_args_new(on_completed, &w);
    CHECK(!sock_send_async(s, e)); /* no buffer at all */
    CHECK_EQ(sock_last_status(), SOCK_STATUS_OK);
    CHECK_EQ(sock_args_bytes_transferred(e), 0);
    CHECK_EQ(sock_args_socket_error(e), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(sock_args_last_operation(e), SOCK_ASYNC_OPERATION_SEND);
    sock_buf dummy = {NULL, 0};
    CHECK(sock_args_set_buffer_list(e, &dummy, 0)); /* an empty list */
    CHECK(!sock_send_async(s, e));
    CHECK_EQ(sock_last_status(), SOCK_STATUS_OK);
    CHECK_EQ(sock_args_bytes_transferred(e), 0);
    CHECK_EQ(sock_args_socket_error(e), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(waiter_count(&w), 0); /* no callback for either */
    /* Nothing reached the peer: the next byte it reads is the one sent now. */
    CHECK(sock_args_set_buffer_list(e, NULL, 0));
    uint8_t x = 'x';
    CHECK(sock_args_set_buffer(e, &x, 1));
    CHECK_EQ(complete(sock_send_async, s, e, &w, NULL), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK(sock_shutdown(s, SOCK_SHUTDOWN_HOW_SEND));
    uint8_t buf[4];
    CHECK_EQ(read(peer, buf, sizeof buf), 1);
    CHECK_EQ(buf[0], 'x');
    CHECK_EQ(read(peer, buf, sizeof buf), 0);
    close(peer);
    sock_args_free(e);
    sock_free(s);
    waiter_destroy(&w);
}

static void test_zero_byte_receive_waits_without_consuming(void)
{
    sock *s;
    int peer = raw_peer(&s, 0);
    CHECK(peer >= 0);
    static probe pz, pl;
    probe_init(&pz);
    probe_init(&pl);
    sock_args *z = sock_args_new(on_probe, &pz); /* no buffer */
    CHECK(sock_receive_async(s, z));             /* nothing there: pending */
    sock_args *zl = sock_args_new(on_probe, &pl);
    sock_buf none = {NULL, 0};
    CHECK(sock_args_set_buffer_list(zl, &none, 0)); /* an empty list */
    CHECK(sock_receive_async(s, zl));
    CHECK_EQ(write(peer, "hello", 5), 5);
    CHECK(wait_for(&pz.w, 1));
    CHECK(wait_for(&pl.w, 1));
    CHECK_EQ(pz.w.error, SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(pz.w.bytes, 0);
    CHECK_EQ(pz.w.operation, SOCK_ASYNC_OPERATION_RECEIVE);
    CHECK_EQ(pl.w.error, SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(pl.w.bytes, 0);
    /* The data is all still there. */
    static waiter w;
    waiter_init(&w);
    sock_args *e = sock_args_new(on_completed, &w);
    static uint8_t buf[5];
    CHECK(lib_recv_exact(s, e, &w, buf, 5));
    CHECK(memcmp(buf, "hello", 5) == 0);
    /* End of stream: Success with 0 bytes (twice: it stays at the end). */
    CHECK_EQ(shutdown(peer, SHUT_WR), 0);
    static uint8_t more[8];
    CHECK(sock_args_set_buffer(e, more, sizeof more));
    CHECK_EQ(complete(sock_receive_async, s, e, &w, NULL), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(sock_args_bytes_transferred(e), 0);
    CHECK_EQ(complete(sock_receive_async, s, e, &w, NULL), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(sock_args_bytes_transferred(e), 0);
    close(peer);
    sock_args_free(z);
    sock_args_free(zl);
    sock_args_free(e);
    sock_free(s);
    waiter_destroy(&w);
    waiter_destroy(&pz.w);
    waiter_destroy(&pl.w);
}

/* ---- 10. disconnect after queued sends -------------------------------------------- */

static void test_disconnect_after_queued_send_delivers_then_eof(void)
{
    sock *s;
    int peer = raw_peer(&s, 4096);
    CHECK(peer >= 0);
    CHECK(sock_set_option(s, SOCK_OPTION_SEND_BUFFER_SIZE, 4096));
    size_t total = 2u << 20;
    uint8_t *data = malloc(total);
    fill_pat(data, total, 0, 4);
    static probe ps, pd;
    probe_init(&ps);
    probe_init(&pd);
    sock_args *se = sock_args_new(on_probe, &ps);
    sock_args *de = sock_args_new(on_probe, &pd);
    CHECK(sock_args_set_buffer(se, data, total));
    CHECK(sock_send_async(s, se)); /* the peer is not reading yet: pending */
    CHECK(sock_disconnect_async(s, de)); /* queued behind the send */
    sock_buf expect = {data, total};
    reader r = {.fd = peer, .expect = &expect, .nexpect = 1, .want = total, .then_eof = 1};
    pthread_t t;
    pthread_create(&t, NULL, reader_main, &r);
    pthread_join(t, NULL);
    CHECK(!r.short_read);
    CHECK_EQ(r.mismatch, 0);
    CHECK_EQ(r.got, total);
    CHECK_EQ(r.eof_rc, 0);
    CHECK(wait_for(&ps.w, 1));
    CHECK(wait_for(&pd.w, 1));
    CHECK_EQ(ps.w.error, SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(ps.w.bytes, total);
    CHECK_EQ(pd.w.error, SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(pd.w.operation, SOCK_ASYNC_OPERATION_DISCONNECT);
    CHECK_EQ(sock_args_last_operation(de), SOCK_ASYNC_OPERATION_DISCONNECT);
    if (h_callbacks_in_order())
        CHECK(ps.order < pd.order);
    close(peer);
    sock_args_free(se);
    sock_args_free(de);
    sock_free(s);
    free(data);
    waiter_destroy(&ps.w);
    waiter_destroy(&pd.w);
}

/* ---- 11. no SIGPIPE --------------------------------------------------------------------- */

static void test_send_after_peer_closed_raises_no_sigpipe(void)
{
    sock *s;
    int peer = raw_peer(&s, 0);
    CHECK(peer >= 0);
    close(peer);
    static waiter w;
    waiter_init(&w);
    sock_args *e = sock_args_new(on_completed, &w);
    /* The peer's FIN has arrived once a receive sees end of stream. */
    static uint8_t in[4];
    CHECK(sock_args_set_buffer(e, in, sizeof in));
    CHECK_EQ(complete(sock_receive_async, s, e, &w, NULL), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(sock_args_bytes_transferred(e), 0);
    CHECK(sock_args_set_buffer(e, NULL, 0));
    uint8_t chunk[1000];
    memset(chunk, 'p', sizeof chunk);
    sock_buf two[2] = {{chunk, 500}, {chunk + 500, 500}};
    int errors = 0;
    for (int i = 0; i < 100000 && errors < 50; i++) {
        /* Alternate single buffers (send) and lists (sendmsg). */
        if (i % 2 == 0) {
            CHECK(sock_args_set_buffer_list(e, NULL, 0));
            CHECK(sock_args_set_buffer(e, chunk, sizeof chunk));
        } else {
            CHECK(sock_args_set_buffer(e, NULL, 0));
            CHECK(sock_args_set_buffer_list(e, two, 2));
        }
        int32_t err = complete(sock_send_async, s, e, &w, NULL);
        CHECK(err != INT32_MIN);
        if (err == SOCK_SOCKET_ERROR_SUCCESS) {
            CHECK_EQ(errors, 0); /* once broken, it stays broken */
            continue;
        }
        CHECK(err == SOCK_SOCKET_ERROR_SHUTDOWN || err == SOCK_SOCKET_ERROR_CONNECTION_RESET);
        errors++;
    }
    CHECK_EQ(errors, 50); /* we are still alive, and every later send failed */
    sock_args_free(e);
    sock_free(s);
    waiter_destroy(&w);
}

/* ---- 12. many sockets from many threads -------------------------------------------- */

enum { MT_THREADS = 4, MT_PAIRS = 50, MT_MESSAGES = 3 };

typedef struct {
    int id;
    int failures;
    char what[200];
    waiter wa, wc, ws; /* in the worker, which outlives the thread */
} mt_worker;

#define MT_FAIL(wk, ...)                                                       \
    do {                                                                       \
        if (!(wk)->failures++)                                                 \
            snprintf((wk)->what, sizeof (wk)->what, __VA_ARGS__);             \
        goto out;                                                              \
    } while (0)

static void *mt_main(void *arg)
{
    mt_worker *wk = arg;
    sock *cl[MT_PAIRS] = {0}, *sv[MT_PAIRS] = {0};
    waiter *wa = &wk->wa, *wc = &wk->wc, *ws = &wk->ws;
    waiter_init(wa);
    waiter_init(wc);
    waiter_init(ws);
    sock_args *ea = sock_args_new(on_completed, wa);
    sock_args *ec = sock_args_new(on_completed, wc);
    sock_args *es = sock_args_new(on_completed, ws);
    char ep[64];
    sock *l = sock_create(SOCK_ADDRESS_FAMILY_INTER_NETWORK, SOCK_SOCKET_TYPE_STREAM,
                          SOCK_PROTOCOL_TYPE_TCP);
    if (!l || !sock_bind(l, "127.0.0.1:0") || !sock_listen(l, MT_PAIRS) ||
        !sock_local_endpoint(l, ep, sizeof ep))
        MT_FAIL(wk, "listener: status %d", sock_last_status());
    if (!sock_args_set_remote_endpoint(ec, ep))
        MT_FAIL(wk, "endpoint %s", ep);
    for (int p = 0; p < MT_PAIRS; p++) {
        int before = waiter_count(wa);
        bool accept_pending = sock_accept_async(l, ea);
        if (!accept_pending && sock_last_status() != SOCK_STATUS_OK)
            MT_FAIL(wk, "accept rejected: %d", sock_last_status());
        cl[p] = sock_create(SOCK_ADDRESS_FAMILY_INTER_NETWORK, SOCK_SOCKET_TYPE_STREAM,
                            SOCK_PROTOCOL_TYPE_TCP);
        if (!cl[p])
            MT_FAIL(wk, "create: %d", sock_last_status());
        int32_t err = complete(sock_connect_async, cl[p], ec, wc, NULL);
        if (err != SOCK_SOCKET_ERROR_SUCCESS)
            MT_FAIL(wk, "connect %d: %d", p, err);
        if (accept_pending && !wait_for(wa, before + 1))
            MT_FAIL(wk, "accept %d never completed", p);
        if (sock_args_socket_error(ea) != SOCK_SOCKET_ERROR_SUCCESS)
            MT_FAIL(wk, "accept %d: %d", p, sock_args_socket_error(ea));
        sv[p] = sock_args_accept_socket(ea);
        if (!sv[p])
            MT_FAIL(wk, "accept %d gave no socket", p);
    }
    /* Echo a few messages on every pair, all pairs open at once. */
    for (int m = 0; m < MT_MESSAGES; m++) {
        for (int p = 0; p < MT_PAIRS; p++) {
            char msg[64], echo[64], back[64];
            int n = snprintf(msg, sizeof msg, "thread %d pair %d message %d", wk->id, p, m);
            if (!sock_args_set_buffer(ec, msg, (size_t)n) ||
                complete(sock_send_async, cl[p], ec, wc, NULL) != 0 ||
                sock_args_bytes_transferred(ec) != (size_t)n)
                MT_FAIL(wk, "client send %d/%d", p, m);
            char *bufs[2] = {echo, back};
            sock *from[2] = {sv[p], cl[p]};
            sock *to[2] = {cl[p], NULL};
            for (int leg = 0; leg < 2; leg++) {
                size_t got = 0;
                while (got < (size_t)n) {
                    if (!sock_args_set_buffer(es, bufs[leg] + got, (size_t)n - got) ||
                        complete(sock_receive_async, from[leg], es, ws, NULL) != 0 ||
                        sock_args_bytes_transferred(es) == 0)
                        MT_FAIL(wk, "receive leg %d pair %d message %d", leg, p, m);
                    got += sock_args_bytes_transferred(es);
                }
                if (memcmp(bufs[leg], msg, (size_t)n) != 0)
                    MT_FAIL(wk, "leg %d pair %d message %d: wrong bytes", leg, p, m);
                if (to[leg]) { /* the server echoes it back */
                    if (!sock_args_set_buffer(es, echo, (size_t)n) ||
                        complete(sock_send_async, sv[p], es, ws, NULL) != 0 ||
                        sock_args_bytes_transferred(es) != (size_t)n)
                        MT_FAIL(wk, "echo send %d/%d", p, m);
                }
            }
            if (!sock_args_set_buffer(ec, NULL, 0) || !sock_args_set_buffer(es, NULL, 0))
                MT_FAIL(wk, "clear buffers");
        }
    }
out:
    for (int p = 0; p < MT_PAIRS; p++) {
        sock_free(cl[p]);
        sock_free(sv[p]);
    }
    sock_free(l);
    sock_args_free(ea);
    sock_args_free(ec);
    sock_args_free(es);
    if (!wk->failures) { /* after a failure a callback may still be on its way */
        waiter_destroy(wa);
        waiter_destroy(wc);
        waiter_destroy(ws);
    }
    return NULL;
}

static void test_many_sockets_from_many_threads(void)
{
    pthread_t t[MT_THREADS];
    static mt_worker wk[MT_THREADS];
    for (int i = 0; i < MT_THREADS; i++) {
        wk[i] = (mt_worker){.id = i};
        pthread_create(&t[i], NULL, mt_main, &wk[i]);
    }
    for (int i = 0; i < MT_THREADS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < MT_THREADS; i++) {
        if (wk[i].failures)
            fprintf(stderr, "    thread %d: %s\n", i, wk[i].what);
        CHECK_EQ(wk[i].failures, 0);
    }
}

int main(void)
{
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&g_close_lock, &attr);
    pthread_mutexattr_destroy(&attr);

    RUN(test_close_aborts_pending_receive_and_send_and_resets_peer);
    RUN(test_close_aborts_pending_accept);
    RUN(test_close_after_shutdown_send_is_graceful);
    RUN(test_queued_receives_complete_in_issue_order);
    RUN(test_queued_large_sends_arrive_whole_in_issue_order);
    RUN(test_concurrent_sends_from_threads_never_interleave);
    RUN(test_concurrent_small_sends_from_threads_all_complete);
    RUN(test_64mib_send_from_buffer_list);
    RUN(test_send_from_5000_entry_list_with_empty_entries);
    RUN(test_send_from_100000_entry_list);
    RUN(test_receive_into_3000_one_byte_entries);
    RUN(test_peer_reset_fails_pending_send);
    RUN(test_peer_reset_fails_pending_receive);
    RUN(test_ping_pong_driven_from_callbacks);
    RUN(test_callback_closes_socket_and_frees_args_and_socket);
    RUN(test_args_freed_in_flight_still_completes_once);
    RUN(test_zero_length_sends_complete_at_once);
    RUN(test_zero_byte_receive_waits_without_consuming);
    RUN(test_disconnect_after_queued_send_delivers_then_eof);
    RUN(test_send_after_peer_closed_raises_no_sigpipe);
    RUN(test_many_sockets_from_many_threads);

    pthread_mutex_destroy(&g_close_lock);
    return h_finish("test_transfer");
}

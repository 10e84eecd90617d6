/*
 * Completion queues from C: a pending operation's completion is posted (a synchronous one is
 * not), the descriptor is readable exactly while something is queued, order and caps, close
 * and shutdown post OperationAborted, args freed while pending are still delivered once,
 * freeing a queue wakes its waiters, rejections, and 4 threads draining 100,000 completions
 * with none lost or delivered twice.
 */
#include "harness.h"

#include <poll.h>
#include <sched.h>

static int readable(intptr_t fd, int timeout_ms)
{
    struct pollfd p = {.fd = (int)fd, .events = POLLIN};
    return poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
}

static void test_a_pending_completion_is_posted_and_the_fd_says_so(void)
{
    sock_cq *q = sock_cq_new();
    CHECK(q != NULL);
    intptr_t fd = sock_cq_fd(q);
    CHECK(fd >= 0);
    sock *s;
    int peer = connected_to_raw(&s);
    CHECK(peer >= 0);
    int token;
    sock_args *e = sock_args_new_queued(q, &token);
    CHECK(e != NULL);
    char in[16];
    CHECK(sock_args_set_buffer(e, in, sizeof in));
    CHECK(sock_receive_async(s, e)); /* nothing written yet: pending */
    sock_args *got[4];
    CHECK_EQ(sock_cq_wait(q, got, 4, 0), 0);
    CHECK(!readable(fd, 0));

    CHECK_EQ(write(peer, "hello", 5), 5);
    CHECK(readable(fd, 10000));
    CHECK_EQ(sock_cq_wait(q, got, 4, 0), 1);
    CHECK(got[0] == e);
    CHECK(sock_args_user_token(got[0]) == &token);
    CHECK_EQ(sock_args_bytes_transferred(e), 5);
    CHECK_EQ(sock_args_socket_error(e), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(sock_args_last_operation(e), SOCK_ASYNC_OPERATION_RECEIVE);
    CHECK(memcmp(in, "hello", 5) == 0);
    CHECK(!readable(fd, 0)); /* empty again */

    /* A send that completes at once is not posted: its results are read at once. */
    CHECK(sock_args_set_buffer(e, "out", 3));
    CHECK(!sock_send_async(s, e));
    CHECK_EQ(sock_last_status(), SOCK_STATUS_OK);
    CHECK_EQ(sock_args_bytes_transferred(e), 3);
    CHECK_EQ(sock_cq_wait(q, got, 4, 0), 0);
    CHECK(!readable(fd, 0));

    /* A wait with a time-out returns 0 after it (a hang would not). */
    CHECK_EQ(sock_cq_wait(q, got, 4, 20), 0);
    CHECK_EQ(sock_last_status(), SOCK_STATUS_OK);
    sock_free(s);
    sock_args_free(e);
    sock_cq_free(q);
    close(peer);
}

static void test_completions_come_in_order_and_cap_is_kept(void)
{
    enum { N = 6 };
    sock_cq *q = sock_cq_new();
    sock *s;
    int peer = connected_to_raw(&s);
    CHECK(peer >= 0);
    sock_args *e[N];
    char in[N];
    for (int i = 0; i < N; i++) {
        e[i] = sock_args_new_queued(q, (void *)(intptr_t)i);
        CHECK(sock_args_set_buffer(e[i], &in[i], 1));
        CHECK(sock_receive_async(s, e[i])); /* queued behind each other: FIFO */
    }
    CHECK_EQ(write(peer, "abcdef", N), N);
    sock_args *got[N];
    int taken = 0;
    while (taken < N) {
        size_t n = sock_cq_wait(q, got + taken, 2, 10000);
        CHECK(n >= 1 && n <= 2);
        taken += (int)n;
    }
    for (int i = 0; i < N; i++) {
        CHECK(got[i] == e[i]);
        CHECK_EQ(in[i], "abcdef"[i]);
    }
    for (int i = 0; i < N; i++)
        sock_args_free(e[i]);
    sock_free(s);
    sock_cq_free(q);
    close(peer);
}

static void test_close_posts_aborts_and_freed_args_are_still_delivered_once(void)
{
    sock_cq *q = sock_cq_new();
    sock *s;
    int peer = connected_to_raw(&s);
    CHECK(peer >= 0);
    char in[4];
    int kept_token, freed_token;
    sock_args *kept = sock_args_new_queued(q, &kept_token);
    sock_args *freed = sock_args_new_queued(q, &freed_token);
    CHECK(sock_args_set_buffer(kept, in, sizeof in));
    CHECK(sock_receive_async(s, kept));
    CHECK(sock_receive_async(s, freed)); /* zero-byte, behind the first */
    sock_args_free(freed);                /* deferred: its completion still comes */
    sock_close(s);
    sock_args *got[4];
    int n = 0;
    while (n < 2) {
        size_t k = sock_cq_wait(q, got + n, 4, 10000);
        CHECK(k > 0);
        n += (int)k;
    }
    CHECK(got[0] == kept);
    CHECK(sock_args_user_token(got[1]) == &freed_token); /* readable until the next wait */
    for (int i = 0; i < 2; i++) {
        CHECK_EQ(sock_args_socket_error(got[i]), SOCK_SOCKET_ERROR_OPERATION_ABORTED);
        CHECK_EQ(sock_args_last_operation(got[i]), SOCK_ASYNC_OPERATION_RECEIVE);
    }
    CHECK_EQ(sock_cq_wait(q, got, 4, 0), 0); /* exactly once each */
    sock_args_free(kept);
    sock_free(s);
    sock_cq_free(q);
    close(peer);
}

typedef struct {
    sock_cq *q;
    size_t returned;
    waiter started;
} blocked_waiter;

static void *wait_forever(void *arg)
{
    blocked_waiter *b = arg;
    sock_args *got[1];
    waiter_signal(&b->started);
    b->returned = sock_cq_wait(b->q, got, 1, -1);
    return NULL;
}

static void test_freeing_a_queue_wakes_its_waiters_and_drops_its_entries(void)
{
    blocked_waiter b;
    memset(&b, 0, sizeof b);
    waiter_init(&b.started);
    b.q = sock_cq_new();
    b.returned = 99;
    pthread_t t;
    CHECK(pthread_create(&t, NULL, wait_forever, &b) == 0);
    CHECK(wait_for(&b.started, 1));

    /* Also: a pending operation and a queued completion whose args were freed. */
    sock *s;
    int peer = connected_to_raw(&s);
    CHECK(peer >= 0);
    sock_cq *other = sock_cq_new();
    sock_args *queued = sock_args_new_queued(other, NULL);
    sock_args *pending = sock_args_new_queued(other, NULL);
    CHECK(sock_receive_async(s, queued));
    CHECK(sock_receive_async(s, pending));
    sock_args_free(queued);
    CHECK_EQ(write(peer, "x", 1), 1); /* the zero-byte receive completes; the next waits */
    CHECK(readable(sock_cq_fd(other), 10000));
    sock_cq_free(other); /* drops the entry (and so the freed args) */
    sock_close(s);       /* the other pending one completes into a freed queue: discarded */
    sock_args_free(pending);
    sock_free(s);
    close(peer);

    sock_cq_free(b.q);
    CHECK(pthread_join(t, NULL) == 0);
    CHECK_EQ(b.returned, 0);
    waiter_destroy(&b.started);
}

static void test_queue_calls_reject_bad_arguments(void)
{
    sock_cq *q = sock_cq_new();
    sock_args *got[1];
    CHECK_EQ(sock_cq_wait(NULL, got, 1, 0), 0);
    CHECK_EQ(sock_last_status(), SOCK_STATUS_NULL_ARGUMENT);
    CHECK_EQ(sock_cq_wait(q, NULL, 1, 0), 0);
    CHECK_EQ(sock_last_status(), SOCK_STATUS_NULL_ARGUMENT);
    CHECK_EQ(sock_cq_wait(q, got, 0, 0), 0);
    CHECK_EQ(sock_last_status(), SOCK_STATUS_INVALID_ARGUMENT);
    CHECK_EQ(sock_cq_wait(q, got, 1, -2), 0);
    CHECK_EQ(sock_last_status(), SOCK_STATUS_INVALID_ARGUMENT);
    CHECK(strlen(sock_last_error_message()) > 0);
    CHECK(sock_args_new_queued(NULL, NULL) == NULL);
    CHECK_EQ(sock_last_status(), SOCK_STATUS_NULL_ARGUMENT);
    CHECK_EQ(sock_cq_fd(NULL), -1);
    CHECK_EQ(sock_last_status(), SOCK_STATUS_NULL_ARGUMENT);
    sock_cq_free(NULL);
    CHECK_EQ(sock_last_status(), SOCK_STATUS_OK);
    sock_cq_free(q);
}

static void test_shutdown_posts_every_pending_operation_before_it_returns(void)
{
    enum { N = 8 };
    sock_cq *q = sock_cq_new();
    sock *s[N];
    int peer[N];
    sock_args *e[N];
    for (int i = 0; i < N; i++) {
        peer[i] = connected_to_raw(&s[i]);
        CHECK(peer[i] >= 0);
        e[i] = sock_args_new_queued(q, NULL);
        CHECK(sock_receive_async(s[i], e[i]));
    }
    sock_runtime_shutdown();
    sock_args *got[N + 1];
    CHECK_EQ(sock_cq_wait(q, got, N + 1, 0), N); /* all there already, no wait */
    for (int i = 0; i < N; i++)
        CHECK_EQ(sock_args_socket_error(got[i]), SOCK_SOCKET_ERROR_OPERATION_ABORTED);
    for (int i = 0; i < N; i++) {
        sock_free(s[i]);
        sock_args_free(e[i]);
        close(peer[i]);
    }
    sock_cq_free(q);
}

/* ---- many threads draining ------------------------------------------------ */

enum { CONNS = 64, DRAINERS = 4, TARGET = 100000 };

typedef struct {
    sock *s;
    int peer;
    sock_args *e;
    char in[64];
    _Atomic long received;
    _Atomic long posted;   /* completions taken from the queue for this args */
    _Atomic long pendings; /* starts that returned true */
} conn;

typedef struct {
    sock_cq *q;
    conn *conns;
    _Atomic long completions;
    _Atomic int enough; /* the feeder stops writing */
    _Atomic int stop;   /* the drainers stop re-issuing and return */
    _Atomic int errors;
} drain_state;

/* Re-issues a connection's receive until one goes pending (each synchronous one is counted
 * on the spot, as no completion will be posted for it). */
static void reissue(drain_state *d, conn *c)
{
    for (;;) {
        if (atomic_load(&d->stop))
            return;
        if (sock_receive_async(c->s, c->e)) {
            atomic_fetch_add(&c->pendings, 1);
            return;
        }
        if (sock_last_status() != SOCK_STATUS_OK ||
            sock_args_socket_error(c->e) != SOCK_SOCKET_ERROR_SUCCESS) {
            atomic_fetch_add(&d->errors, 1);
            return;
        }
        atomic_fetch_add(&c->received, (long)sock_args_bytes_transferred(c->e));
    }
}

static void *drain(void *arg)
{
    drain_state *d = arg;
    sock_args *got[16];
    while (!atomic_load(&d->stop)) {
        size_t n = sock_cq_wait(d->q, got, 16, 50);
        for (size_t i = 0; i < n; i++) {
            conn *c = sock_args_user_token(got[i]);
            atomic_fetch_add(&c->posted, 1);
            if (sock_args_socket_error(got[i]) == SOCK_SOCKET_ERROR_OPERATION_ABORTED)
                continue;
            if (sock_args_socket_error(got[i]) != SOCK_SOCKET_ERROR_SUCCESS)
                atomic_fetch_add(&d->errors, 1);
            atomic_fetch_add(&c->received, (long)sock_args_bytes_transferred(got[i]));
            if (atomic_fetch_add(&d->completions, 1) + 1 >= TARGET)
                atomic_store(&d->enough, 1);
            reissue(d, c);
        }
    }
    return NULL;
}

static void test_four_threads_drain_100000_completions_none_lost_or_doubled(void)
{
    static conn conns[CONNS];
    drain_state d;
    memset(&d, 0, sizeof d);
    d.q = sock_cq_new();
    d.conns = conns;
    for (int i = 0; i < CONNS; i++) {
        memset(&conns[i], 0, sizeof conns[i]);
        conns[i].peer = connected_to_raw(&conns[i].s);
        CHECK(conns[i].peer >= 0);
        conns[i].e = sock_args_new_queued(d.q, &conns[i]);
        CHECK(sock_args_set_buffer(conns[i].e, conns[i].in, sizeof conns[i].in));
        reissue(&d, &conns[i]);
    }
    pthread_t t[DRAINERS];
    for (int i = 0; i < DRAINERS; i++)
        CHECK(pthread_create(&t[i], NULL, drain, &d) == 0);
    /* The feeder: one byte at a time to every peer, round and round, until the drainers have
     * seen enough (bounded, so a hang fails rather than spins for ever). */
    long written[CONNS] = {0};
    for (long round = 0; !atomic_load(&d.enough) && round < 100L * TARGET; round++) {
        int i = (int)(round % CONNS);
        if (write(conns[i].peer, "z", 1) == 1)
            written[i]++;
    }
    CHECK(atomic_load(&d.enough));
    /* Then every byte written must come out, through completions or synchronous receives. */
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (int i = 0; i < CONNS;) {
        if (atomic_load(&conns[i].received) == written[i]) {
            i++;
            continue;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - start.tv_sec > 10)
            break; /* checked below */
        sched_yield();
    }
    atomic_store(&d.stop, 1);
    for (int i = 0; i < DRAINERS; i++)
        pthread_join(t[i], NULL);
    CHECK_EQ(atomic_load(&d.errors), 0);
    CHECK(atomic_load(&d.completions) >= TARGET);

    /* Close everything: the receives still pending are posted as aborted. */
    for (int i = 0; i < CONNS; i++)
        sock_close(conns[i].s);
    sock_args *got[CONNS];
    long aborted_expected = 0;
    for (int i = 0; i < CONNS; i++)
        aborted_expected += atomic_load(&conns[i].pendings) - atomic_load(&conns[i].posted);
    long aborted = 0;
    while (aborted < aborted_expected) {
        size_t n = sock_cq_wait(d.q, got, CONNS, 10000);
        CHECK(n > 0);
        for (size_t k = 0; k < n; k++) {
            conn *c = sock_args_user_token(got[k]);
            atomic_fetch_add(&c->posted, 1);
            CHECK_EQ(sock_args_socket_error(got[k]), SOCK_SOCKET_ERROR_OPERATION_ABORTED);
        }
        aborted += (long)n;
    }
    CHECK_EQ(sock_cq_wait(d.q, got, CONNS, 0), 0);
    for (int i = 0; i < CONNS; i++) {
        /* Exactly one posted completion per pending start, and every byte read once. */
        CHECK_EQ(atomic_load(&conns[i].posted), atomic_load(&conns[i].pendings));
        CHECK_EQ(atomic_load(&conns[i].received), written[i]);
        sock_free(conns[i].s);
        sock_args_free(conns[i].e);
        close(conns[i].peer);
    }
    sock_cq_free(d.q);
}

int main(void)
{
    RUN(test_a_pending_completion_is_posted_and_the_fd_says_so);
    RUN(test_completions_come_in_order_and_cap_is_kept);
    RUN(test_close_posts_aborts_and_freed_args_are_still_delivered_once);
    RUN(test_freeing_a_queue_wakes_its_waiters_and_drops_its_entries);
    RUN(test_queue_calls_reject_bad_arguments);
    RUN(test_four_threads_drain_100000_completions_none_lost_or_doubled);
    RUN(test_shutdown_posts_every_pending_operation_before_it_returns);
    return h_finish("test_cq");
}

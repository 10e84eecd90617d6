/*
 * The runtime from C: sock_runtime_configure (threads, dispatch, environment defaults,
 * rejections), several reactor threads, Pool dispatch (a blocked callback stalls nobody),
 * and sock_runtime_shutdown (every pending operation aborted exactly once before it
 * returns, rejected inside a callback, a fresh start afterwards, safe from atexit).
 *
 * The runtime is process-wide, so each test begins with sock_runtime_shutdown() for a clean
 * start, and tests that need a first use with a given environment run in a forked child
 * (forked while no runtime thread exists).
 */
#include "harness.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>

/* Library threads whose name starts with `prefix` (Linux keeps 15 bytes of a name). */
static int threads_named(const char *prefix)
{
    DIR *dir = opendir("/proc/self/task");
    if (!dir)
        return -1;
    int n = 0;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] == '.')
            continue;
        char path[300], name[64] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", entry->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        if (fgets(name, sizeof name, f) && strncmp(name, prefix, strlen(prefix)) == 0)
            n++;
        fclose(f);
    }
    closedir(dir);
    return n;
}

static int this_thread_is(const char *prefix)
{
    char name[32] = "";
    pthread_getname_np(pthread_self(), name, sizeof name);
    return strncmp(name, prefix, strlen(prefix)) == 0;
}

/* Runs `body` in a forked child (after a shutdown, so no runtime thread is copied) and
 * returns its exit status, or -1 if it did not exit normally. */
/* ---- configuration -------------------------------------------------------- */

static void test_configure_rejects_bad_values_and_a_running_runtime(void)
{
    sock_runtime_shutdown();
    CHECK_EQ(sock_last_status(), SOCK_STATUS_OK);
    CHECK_REJECTED(sock_runtime_configure(0, SOCK_DISPATCH_INLINE), SOCK_STATUS_INVALID_ARGUMENT);
    CHECK_REJECTED(sock_runtime_configure(257, SOCK_DISPATCH_INLINE),
                   SOCK_STATUS_INVALID_ARGUMENT);
    CHECK_REJECTED(sock_runtime_configure(1, 2), SOCK_STATUS_INVALID_ARGUMENT);
    CHECK_REJECTED(sock_runtime_configure(1, -1), SOCK_STATUS_INVALID_ARGUMENT);
    CHECK(sock_runtime_configure(3, SOCK_DISPATCH_INLINE));
    CHECK_EQ(sock_last_status(), SOCK_STATUS_OK);
    CHECK_EQ(threads_named("sockasync-react"), 0); /* lazily: nothing started yet */

    sock *s = sock_create(SOCK_ADDRESS_FAMILY_INTER_NETWORK, SOCK_SOCKET_TYPE_STREAM,
                          SOCK_PROTOCOL_TYPE_TCP);
    CHECK(s != NULL);
    CHECK_EQ(threads_named("sockasync-react"), 3);
    CHECK_EQ(threads_named("sockasync-pool"), 0);
    CHECK_REJECTED(sock_runtime_configure(1, SOCK_DISPATCH_INLINE),
                   SOCK_STATUS_INVALID_OPERATION);
    sock_free(s);

    /* After a shutdown the threads are gone and the next start may be configured anew. */
    sock_runtime_shutdown();
    CHECK_EQ(threads_named("sockasync-react"), 0);
    CHECK(sock_runtime_configure(1, SOCK_DISPATCH_POOL));
    s = sock_create(SOCK_ADDRESS_FAMILY_INTER_NETWORK, SOCK_SOCKET_TYPE_STREAM,
                    SOCK_PROTOCOL_TYPE_TCP);
    CHECK(s != NULL);
    CHECK_EQ(threads_named("sockasync-react"), 1);
    CHECK(threads_named("sockasync-pool") >= 2);
    sock_free(s);
    sock_runtime_shutdown();
    CHECK_EQ(threads_named("sockasync-pool"), 0);
}

static int child_environment_defaults(void)
{
    setenv("SOCKASYNC_REACTOR_THREADS", "2", 1);
    setenv("SOCKASYNC_DISPATCH", "pool", 1);
    sock *s = sock_create(SOCK_ADDRESS_FAMILY_INTER_NETWORK, SOCK_SOCKET_TYPE_STREAM,
                          SOCK_PROTOCOL_TYPE_TCP);
    if (!s)
        return 10;
    if (threads_named("sockasync-react") != 2)
        return 11;
    if (threads_named("sockasync-pool") < 2)
        return 12;
    sock_free(s);
    sock_runtime_shutdown();
    return threads_named("sockasync-") == 0 ? 0 : 13;
}

static int child_bad_environment(void)
{
    static const char *bad[][2] = {
        {"SOCKASYNC_REACTOR_THREADS", "many"},
        {"SOCKASYNC_REACTOR_THREADS", "0"},
        {"SOCKASYNC_REACTOR_THREADS", "100000"},
        {"SOCKASYNC_DISPATCH", "fast"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        unsetenv("SOCKASYNC_REACTOR_THREADS");
        unsetenv("SOCKASYNC_DISPATCH");
        setenv(bad[i][0], bad[i][1], 1);
        sock *s = sock_create(SOCK_ADDRESS_FAMILY_INTER_NETWORK, SOCK_SOCKET_TYPE_STREAM,
                              SOCK_PROTOCOL_TYPE_TCP);
        if (s || sock_last_status() != SOCK_STATUS_INVALID_ARGUMENT)
            return 20 + (int)i;
        if (!strstr(sock_last_error_message(), bad[i][0]))
            return 30 + (int)i;
    }
    /* The call overrides the environment. */
    if (!sock_runtime_configure(2, SOCK_DISPATCH_INLINE))
        return 40;
    sock *s = sock_create(SOCK_ADDRESS_FAMILY_INTER_NETWORK, SOCK_SOCKET_TYPE_STREAM,
                          SOCK_PROTOCOL_TYPE_TCP);
    if (!s || threads_named("sockasync-react") != 2)
        return 41;
    sock_free(s);
    sock_runtime_shutdown();
    return 0;
}

static void test_environment_variables_set_the_defaults(void)
{
    CHECK_EQ(in_child(child_environment_defaults), 0);
    CHECK_EQ(in_child(child_bad_environment), 0);
}

/* ---- several reactors ----------------------------------------------------- */

static void test_sockets_are_spread_over_the_reactor_threads(void)
{
    enum { PAIRS = 8 };
    sock_runtime_shutdown();
    CHECK(sock_runtime_configure(2, SOCK_DISPATCH_INLINE));
    sock *client[PAIRS], *server[PAIRS];
    sock_args *e[PAIRS];
    waiter w[PAIRS];
    char buffers[PAIRS][8];
    for (int i = 0; i < PAIRS; i++) {
        CHECK(connected_pair(&client[i], &server[i]));
        waiter_init(&w[i]);
        e[i] = sock_args_new(on_completed, &w[i]);
        CHECK(sock_args_set_buffer(e[i], buffers[i], sizeof buffers[i]));
        CHECK(sock_receive_async(server[i], e[i])); /* nothing sent yet: pending */
    }
    waiter sent;
    waiter_init(&sent);
    sock_args *send_args = sock_args_new(on_completed, &sent);
    CHECK(sock_args_set_buffer(send_args, "x", 1));
    for (int i = 0; i < PAIRS; i++) {
        CHECK(!sock_send_async(client[i], send_args)); /* 1 byte goes out at once */
        CHECK_EQ(sock_args_socket_error(send_args), SOCK_SOCKET_ERROR_SUCCESS);
    }
    int distinct = 0;
    pthread_t seen[PAIRS];
    for (int i = 0; i < PAIRS; i++) {
        CHECK(wait_for(&w[i], 1));
        CHECK_EQ(w[i].error, SOCK_SOCKET_ERROR_SUCCESS);
        CHECK_EQ(w[i].bytes, 1);
        int known = 0;
        for (int j = 0; j < distinct; j++)
            known |= pthread_equal(seen[j], w[i].thread);
        if (!known)
            seen[distinct++] = w[i].thread;
    }
    CHECK_EQ(distinct, 2); /* both reactors served callbacks, and only they did */
    for (int i = 0; i < PAIRS; i++) {
        sock_free(client[i]);
        sock_free(server[i]);
        sock_args_free(e[i]);
        waiter_destroy(&w[i]);
    }
    sock_args_free(send_args);
    waiter_destroy(&sent);
    sock_runtime_shutdown();
}

/* ---- Pool dispatch -------------------------------------------------------- */

typedef struct {
    waiter started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int released;
    int released_in_time; /* set if the release came before the 10 s limit */
    int on_pool;
} blocker;

static void on_blocking(sock *s, sock_args *e, void *token)
{
    (void)s;
    (void)e;
    blocker *b = token;
    b->on_pool = this_thread_is("sockasync-pool");
    waiter_signal(&b->started);
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    pthread_mutex_lock(&b->lock);
    int rc = 0;
    while (!b->released && rc == 0)
        rc = pthread_cond_timedwait(&b->cond, &b->lock, &deadline);
    b->released_in_time = b->released;
    pthread_mutex_unlock(&b->lock);
}

static void test_pool_dispatch_a_blocked_callback_stalls_no_other_socket(void)
{
    sock_runtime_shutdown();
    CHECK(sock_runtime_configure(1, SOCK_DISPATCH_POOL));
    sock *a_client, *a_server, *b_client, *b_server;
    CHECK(connected_pair(&a_client, &a_server));
    CHECK(connected_pair(&b_client, &b_server));

    blocker b;
    memset(&b, 0, sizeof b);
    waiter_init(&b.started);
    pthread_mutex_init(&b.lock, NULL);
    pthread_cond_init(&b.cond, NULL);
    char a_buf[4], b_buf[4];
    sock_args *blocking = sock_args_new(on_blocking, &b);
    CHECK(sock_args_set_buffer(blocking, a_buf, sizeof a_buf));
    CHECK(sock_receive_async(a_server, blocking));
    waiter other;
    waiter_init(&other);
    sock_args *other_args = sock_args_new(on_completed, &other);
    CHECK(sock_args_set_buffer(other_args, b_buf, sizeof b_buf));
    CHECK(sock_receive_async(b_server, other_args));

    waiter sent;
    waiter_init(&sent);
    sock_args *send_args = sock_args_new(on_completed, &sent);
    CHECK(sock_args_set_buffer(send_args, "ab", 2));
    CHECK(!sock_send_async(a_client, send_args));
    CHECK(wait_for(&b.started, 1)); /* the blocking callback is now blocked */
    CHECK(!sock_send_async(b_client, send_args));
    /* The other socket's callback comes while the first is still blocked: with Inline
     * dispatch it would wait behind it (and this wait would run out). */
    int other_done = wait_for(&other, 1);
    pthread_mutex_lock(&b.lock);
    b.released = 1;
    pthread_cond_broadcast(&b.cond);
    pthread_mutex_unlock(&b.lock);
    CHECK(other_done);
    CHECK_EQ(other.bytes, 2);

    sock_runtime_shutdown(); /* returns after the blocked callback has returned */
    CHECK(b.released_in_time);
    CHECK(b.on_pool);
    sock_free(a_client);
    sock_free(a_server);
    sock_free(b_client);
    sock_free(b_server);
    sock_args_free(blocking);
    sock_args_free(other_args);
    sock_args_free(send_args);
    waiter_destroy(&other);
    waiter_destroy(&sent);
    waiter_destroy(&b.started);
}

/* ---- shutdown ------------------------------------------------------------- */

static void shutdown_aborts_every_kind(uint32_t reactors, int32_t dispatch)
{
    sock_runtime_shutdown();
    CHECK(sock_runtime_configure(reactors, dispatch));
    enum { ACCEPT, CONNECT, RECEIVE, SEND, DISCONNECT, KINDS };
    waiter w[KINDS];
    sock_args *e[KINDS];
    for (int i = 0; i < KINDS; i++) {
        waiter_init(&w[i]);
        e[i] = sock_args_new(on_completed, &w[i]);
    }

    /* An accept nobody connects to. */
    char ep[64];
    sock *l = listener(0, ep, sizeof ep);
    CHECK(l != NULL);
    CHECK(sock_accept_async(l, e[ACCEPT]));

    /* A connect to a listener whose one-place backlog is taken: its SYN goes unanswered. */
    int full = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    CHECK(bind(full, (struct sockaddr *)&a, sizeof a) == 0 && listen(full, 0) == 0);
    CHECK(getsockname(full, (struct sockaddr *)&a, &alen) == 0);
    int queued = raw_connect(ntohs(a.sin_port));
    CHECK(queued >= 0);
    char full_ep[64];
    snprintf(full_ep, sizeof full_ep, "127.0.0.1:%d", ntohs(a.sin_port));
    sock *connecting = sock_create(SOCK_ADDRESS_FAMILY_INTER_NETWORK, SOCK_SOCKET_TYPE_STREAM,
                                   SOCK_PROTOCOL_TYPE_TCP);
    CHECK(connecting != NULL);
    CHECK(sock_args_set_remote_endpoint(e[CONNECT], full_ep));
    CHECK(sock_connect_async(connecting, e[CONNECT]));

    /* A receive its silent peer never answers. */
    sock *quiet;
    int quiet_peer = connected_to_raw(&quiet);
    CHECK(quiet_peer >= 0);
    char rbuf[16];
    CHECK(sock_args_set_buffer(e[RECEIVE], rbuf, sizeof rbuf));
    CHECK(sock_receive_async(quiet, e[RECEIVE]));

    /* A send larger than a small window the peer never drains, and a disconnect queued
     * behind it. */
    sock *sender;
    int stalled_peer = connected_to_raw_sized(&sender, 4096);
    CHECK(stalled_peer >= 0);
    size_t big_len = 8 << 20;
    char *big = calloc(1, big_len);
    CHECK(big != NULL);
    CHECK(sock_args_set_buffer(e[SEND], big, big_len));
    CHECK(sock_send_async(sender, e[SEND]));
    CHECK(sock_disconnect_async(sender, e[DISCONNECT]));

    for (int i = 0; i < KINDS; i++)
        CHECK_EQ(waiter_count(&w[i]), 0);
    sock_runtime_shutdown();
    CHECK_EQ(sock_last_status(), SOCK_STATUS_OK);
    /* Every callback has run by the time it returns, exactly once, and none can follow. */
    static const int32_t operation[KINDS] = {
        SOCK_ASYNC_OPERATION_ACCEPT, SOCK_ASYNC_OPERATION_CONNECT,
        SOCK_ASYNC_OPERATION_RECEIVE, SOCK_ASYNC_OPERATION_SEND,
        SOCK_ASYNC_OPERATION_DISCONNECT};
    for (int i = 0; i < KINDS; i++) {
        CHECK_EQ(waiter_count(&w[i]), 1);
        CHECK_EQ(w[i].error, SOCK_SOCKET_ERROR_OPERATION_ABORTED);
        CHECK_EQ(w[i].operation, operation[i]);
    }
    CHECK(w[SEND].bytes < big_len);
    CHECK_EQ(threads_named("sockasync-"), 0);

    /* The sockets are closed: further operations are rejected, and freeing is fine. */
    CHECK_REJECTED(sock_receive_async(quiet, e[RECEIVE]), SOCK_STATUS_DISPOSED);
    CHECK_REJECTED(sock_accept_async(l, e[ACCEPT]), SOCK_STATUS_DISPOSED);
    sock_free(l);
    sock_free(connecting);
    sock_free(quiet);
    sock_free(sender);
    close(full);
    close(queued);
    close(quiet_peer);
    close(stalled_peer);
    free(big);

    /* The runtime starts again on the next socket, configured as before. */
    sock *c, *s;
    CHECK(connected_pair(&c, &s));
    CHECK_EQ(threads_named("sockasync-react"), (int)reactors);
    CHECK(sock_args_set_buffer(e[SEND], "again", 5));
    CHECK(sock_args_set_buffer(e[RECEIVE], rbuf, sizeof rbuf));
    CHECK_EQ(complete(sock_send_async, c, e[SEND], &w[SEND], NULL), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(complete(sock_receive_async, s, e[RECEIVE], &w[RECEIVE], NULL),
             SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(sock_args_bytes_transferred(e[RECEIVE]), 5);
    CHECK(memcmp(rbuf, "again", 5) == 0);
    sock_free(c);
    sock_free(s);
    for (int i = 0; i < KINDS; i++) {
        sock_args_free(e[i]);
        waiter_destroy(&w[i]);
    }
    sock_runtime_shutdown();
}

static void test_shutdown_aborts_pending_operations_of_every_kind_and_starts_again(void)
{
    shutdown_aborts_every_kind(1, SOCK_DISPATCH_INLINE);
}

static void test_shutdown_with_two_reactors_and_the_pool(void)
{
    shutdown_aborts_every_kind(2, SOCK_DISPATCH_POOL);
}

typedef struct {
    waiter done;
    int32_t status;
    int32_t later_status;
} reentrant;

static void on_shutdown_inside(sock *s, sock_args *e, void *token)
{
    (void)s;
    (void)e;
    reentrant *r = token;
    sock_runtime_shutdown();
    r->status = sock_last_status();
    waiter_signal(&r->done);
}

static void test_shutdown_inside_a_callback_is_rejected_not_a_deadlock(void)
{
    for (int32_t dispatch = SOCK_DISPATCH_INLINE; dispatch <= SOCK_DISPATCH_POOL; dispatch++) {
        sock_runtime_shutdown();
        CHECK(sock_runtime_configure(1, dispatch));
        sock *c, *s;
        CHECK(connected_pair(&c, &s));
        reentrant r;
        memset(&r, 0, sizeof r);
        waiter_init(&r.done);
        char buf[4];
        sock_args *e = sock_args_new(on_shutdown_inside, &r);
        CHECK(sock_args_set_buffer(e, buf, sizeof buf));
        CHECK(sock_receive_async(s, e));
        waiter sent;
        waiter_init(&sent);
        sock_args *send_args = sock_args_new(on_completed, &sent);
        CHECK(sock_args_set_buffer(send_args, "z", 1));
        CHECK(!sock_send_async(c, send_args));
        CHECK(wait_for(&r.done, 1));
        CHECK_EQ(r.status, SOCK_STATUS_INVALID_OPERATION);
        /* Nothing was stopped: the sockets still work. */
        CHECK(!sock_send_async(c, send_args));
        CHECK_EQ(sock_last_status(), SOCK_STATUS_OK);
        sock_free(c);
        sock_free(s);
        sock_args_free(e);
        sock_args_free(send_args);
        waiter_destroy(&sent);
        waiter_destroy(&r.done);
    }
    sock_runtime_shutdown();
}

static void test_shutdown_without_a_runtime_does_nothing(void)
{
    sock_runtime_shutdown();
    sock_runtime_shutdown();
    CHECK_EQ(sock_last_status(), SOCK_STATUS_OK);
    CHECK_EQ(threads_named("sockasync-"), 0);
}

/* ---- atexit --------------------------------------------------------------- */

static int atexit_pipe = -1;

static void on_report(sock *s, sock_args *e, void *token)
{
    (void)s;
    (void)token;
    char line[32];
    int n = snprintf(line, sizeof line, "%d\n", (int)sock_args_socket_error(e));
    if (write(atexit_pipe, line, (size_t)n) != n)
        _exit(90);
}

static sock *child_sockets[3];
static sock_args *child_args[2];

/* Runs after the shutdown (atexit handlers run in reverse order): the handles are freed, as a
 * tidy host would, so memory checkers see nothing left. */
static void free_child_handles(void)
{
    for (int i = 0; i < 3; i++)
        sock_free(child_sockets[i]);
    for (int i = 0; i < 2; i++)
        sock_args_free(child_args[i]);
}

/* The child: two operations pending, atexit(sock_runtime_shutdown), and main returns (here:
 * exit, which runs the atexit handlers exactly as returning from main does). */
static int child_exits_with_operations_pending(void)
{
    if (atexit(free_child_handles) != 0 || atexit(sock_runtime_shutdown) != 0)
        return 50;
    char ep[64];
    sock *l = listener(0, ep, sizeof ep);
    sock *c, *s;
    if (!l || !connected_pair(&c, &s))
        return 51;
    child_sockets[0] = l;
    child_sockets[1] = c;
    child_sockets[2] = s;
    sock_args *accepting = sock_args_new(on_report, NULL);
    sock_args *receiving = sock_args_new(on_report, NULL);
    child_args[0] = accepting;
    child_args[1] = receiving;
    static char buf[8];
    sock_args_set_buffer(receiving, buf, sizeof buf);
    if (!sock_accept_async(l, accepting) || !sock_receive_async(s, receiving))
        return 52;
    exit(0);
}

static void test_atexit_shutdown_lets_a_process_with_pending_operations_exit(void)
{
    int fds[2];
    CHECK(pipe(fds) == 0);
    atexit_pipe = fds[1];
    sock_runtime_shutdown();
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        _exit(child_exits_with_operations_pending());
    }
    close(fds[1]);
    char got[128] = "";
    size_t len = 0;
    int hung = 0;
    for (;;) {
        struct pollfd p = {.fd = fds[0], .events = POLLIN};
        if (poll(&p, 1, 10000) != 1) {
            hung = 1; /* no end of file within 10 s: the child did not exit */
            break;
        }
        ssize_t n = read(fds[0], got + len, sizeof got - 1 - len);
        if (n <= 0)
            break; /* end of file: the child is exiting */
        len += (size_t)n;
    }
    close(fds[0]);
    if (hung)
        kill(pid, SIGKILL);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(!hung);
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), 0);
    if (strcmp(got, "995\n995\n") != 0)
        fprintf(stderr, "  child reported: [%s]\n", got);
    CHECK(strcmp(got, "995\n995\n") == 0);
}

int main(void)
{
    RUN(test_atexit_shutdown_lets_a_process_with_pending_operations_exit);
    RUN(test_environment_variables_set_the_defaults);
    RUN(test_configure_rejects_bad_values_and_a_running_runtime);
    RUN(test_shutdown_without_a_runtime_does_nothing);
    RUN(test_sockets_are_spread_over_the_reactor_threads);
    RUN(test_pool_dispatch_a_blocked_callback_stalls_no_other_socket);
    RUN(test_shutdown_aborts_pending_operations_of_every_kind_and_starts_again);
    RUN(test_shutdown_with_two_reactors_and_the_pool);
    RUN(test_shutdown_inside_a_callback_is_rejected_not_a_deadlock);
    return h_finish("test_runtime");
}

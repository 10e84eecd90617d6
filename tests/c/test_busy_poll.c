/*
 * Busy poll (sock_runtime_set_busy_poll, SOCKASYNC_BUSY_POLL_US): the setting's rules (before
 * the start or after a shutdown, the maximum, kept across a shutdown, the environment), and
 * what it does: after a turn with work the reactor polls without sleeping for the window,
 * catching what comes meanwhile without blocking, then sleeps; traffic and shutdown behave
 * as without it. scripts/test.sh runs this suite on both backends like the others.
 *
 * The spin is observed from outside: the process's CPU time grows while the test thread is
 * blocked (and stops growing once the window has passed), and a reactor that answers a
 * ping-pong inside the window makes almost no voluntary context switch. Those measurements
 * wait for time to pass, which is what they measure; completions are always awaited.
 */
#include "harness.h"

#include <dirent.h>

/* The test's own busy poll window for the measurements: long enough to stand out from the
 * noise of a shared machine, short enough to keep the suite quick. */
#define WINDOW_US 200000

/* Valgrind runs one thread at a time and switches between them by blocking them: context
 * switches and CPU time say nothing about the library there. */
static int under_valgrind(void)
{
    const char *preload = getenv("LD_PRELOAD");
    return preload && strstr(preload, "vgpreload") != NULL;
}

/* The measurements below say nothing under valgrind: they run only elsewhere (plain, with
 * ASan, on each backend). */
#define SKIP_UNDER_VALGRIND()                                                  \
    do {                                                                       \
        if (under_valgrind()) {                                                \
            fprintf(stderr, "  (not measured under valgrind)\n");              \
            return;                                                            \
        }                                                                      \
    } while (0)

static double process_cpu_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static double monotonic_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static void block_for_ms(long ms)
{
    struct timespec t = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

/* Voluntary context switches (blocking waits) of the reactor threads so far. */
static long reactor_voluntary_switches(void)
{
    DIR *dir = opendir("/proc/self/task");
    if (!dir)
        return -1;
    long total = 0;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] == '.')
            continue;
        char path[300], line[128], name[64] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", entry->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        int reactor = fgets(name, sizeof name, f) && strncmp(name, "sockasync-react", 15) == 0;
        fclose(f);
        if (!reactor)
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/status", entry->d_name);
        f = fopen(path, "r");
        if (!f)
            continue;
        long n;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "voluntary_ctxt_switches: %ld", &n) == 1)
                total += n;
        fclose(f);
    }
    closedir(dir);
    return total;
}

/* Starts the runtime afresh with this busy poll. */
static int restart_with(uint32_t microseconds)
{
    sock_runtime_shutdown();
    return sock_runtime_set_busy_poll(microseconds);
}

/* ---- the setting ---------------------------------------------------------- */

static void test_busy_poll_is_set_before_start_checked_and_kept_across_shutdown(void)
{
    sock_runtime_shutdown();
    CHECK(sock_runtime_set_busy_poll(0));
    CHECK_EQ(sock_runtime_busy_poll(), 0);
    CHECK_EQ(sock_last_status(), SOCK_STATUS_OK);
    CHECK_REJECTED(sock_runtime_set_busy_poll(1000001), SOCK_STATUS_INVALID_ARGUMENT);
    CHECK_REJECTED(sock_runtime_set_busy_poll(UINT32_MAX), SOCK_STATUS_INVALID_ARGUMENT);
    CHECK_EQ(sock_runtime_busy_poll(), 0); /* a rejected value changes nothing */
    CHECK(sock_runtime_set_busy_poll(1000000));
    CHECK_EQ(sock_runtime_busy_poll(), 1000000);
    CHECK(sock_runtime_set_busy_poll(250));
    CHECK_EQ(sock_runtime_busy_poll(), 250);

    sock *s = sock_create(SOCK_ADDRESS_FAMILY_INTER_NETWORK, SOCK_SOCKET_TYPE_STREAM,
                          SOCK_PROTOCOL_TYPE_TCP);
    CHECK(s != NULL);
    CHECK_EQ(sock_runtime_busy_poll(), 250);
    CHECK_REJECTED(sock_runtime_set_busy_poll(10), SOCK_STATUS_INVALID_OPERATION);
    CHECK_REJECTED(sock_runtime_set_busy_poll(0), SOCK_STATUS_INVALID_OPERATION);
    CHECK_EQ(sock_runtime_busy_poll(), 250);
    sock_free(s);

    /* A restart uses it again. */
    sock_runtime_shutdown();
    CHECK_EQ(sock_runtime_busy_poll(), 250);
    s = sock_create(SOCK_ADDRESS_FAMILY_INTER_NETWORK, SOCK_SOCKET_TYPE_STREAM,
                    SOCK_PROTOCOL_TYPE_TCP);
    CHECK(s != NULL);
    CHECK_EQ(sock_runtime_busy_poll(), 250);
    sock_free(s);
    CHECK(restart_with(0));
}

static int child_busy_poll_from_the_environment(void)
{
    setenv("SOCKASYNC_BUSY_POLL_US", " 75 ", 1);
    if (sock_runtime_busy_poll() != 75 || sock_last_status() != SOCK_STATUS_OK)
        return 10;
    sock *s = sock_create(SOCK_ADDRESS_FAMILY_INTER_NETWORK, SOCK_SOCKET_TYPE_STREAM,
                          SOCK_PROTOCOL_TYPE_TCP);
    if (!s)
        return 11;
    /* The running runtime keeps what it started with. */
    setenv("SOCKASYNC_BUSY_POLL_US", "5", 1);
    if (sock_runtime_busy_poll() != 75)
        return 12;
    sock_free(s);
    sock_runtime_shutdown();

    static const char *bad[] = {"fast", "-1", "1000001", "4294967296", "", "12us"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("SOCKASYNC_BUSY_POLL_US", bad[i], 1);
        s = sock_create(SOCK_ADDRESS_FAMILY_INTER_NETWORK, SOCK_SOCKET_TYPE_STREAM,
                        SOCK_PROTOCOL_TYPE_TCP);
        if (s || sock_last_status() != SOCK_STATUS_INVALID_ARGUMENT)
            return 20 + (int)i;
        if (!strstr(sock_last_error_message(), "SOCKASYNC_BUSY_POLL_US"))
            return 30 + (int)i;
        if (sock_runtime_busy_poll() != 0 || sock_last_status() != SOCK_STATUS_INVALID_ARGUMENT)
            return 40 + (int)i;
    }
    /* The call overrides the environment, even one that does not parse. */
    if (!sock_runtime_set_busy_poll(30))
        return 50;
    s = sock_create(SOCK_ADDRESS_FAMILY_INTER_NETWORK, SOCK_SOCKET_TYPE_STREAM,
                    SOCK_PROTOCOL_TYPE_TCP);
    if (!s || sock_runtime_busy_poll() != 30)
        return 51;
    sock_free(s);
    sock_runtime_shutdown();
    return 0;
}

static void test_environment_variable_sets_the_default(void)
{
    CHECK_EQ(in_child(child_busy_poll_from_the_environment), 0);
}

/* ---- traffic -------------------------------------------------------------- */

static void test_echo_of_many_messages_with_busy_poll(void)
{
    enum { MESSAGES = 2000, LARGE = 4 << 20 };
    CHECK(restart_with(100));
    sock *client, *server;
    CHECK(connected_pair(&client, &server));
    waiter ws, wr;
    waiter_init(&ws);
    waiter_init(&wr);
    sock_args *tx = sock_args_new(on_completed, &ws);
    sock_args *rx = sock_args_new(on_completed, &wr);
    int pending = 0, synchronous = 0, received = 0;
    for (int i = 0; i < MESSAGES; i++) {
        char out[32], in[32];
        int len = snprintf(out, sizeof out, "message %d", i);
        sock *from = i % 2 ? server : client, *to = i % 2 ? client : server;
        CHECK(sock_args_set_buffer(rx, in, sizeof in));
        /* The receive goes first, so it is pending when the bytes come. */
        int was_pending = 0;
        bool receive_pending = sock_receive_async(to, rx);
        CHECK(receive_pending || sock_last_status() == SOCK_STATUS_OK);
        CHECK(sock_args_set_buffer(tx, out, (size_t)len));
        CHECK_EQ(complete(sock_send_async, from, tx, &ws, &was_pending),
                 SOCK_SOCKET_ERROR_SUCCESS);
        pending += was_pending + receive_pending;
        synchronous += !was_pending + !receive_pending;
        if (receive_pending)
            CHECK(wait_for(&wr, ++received));
        CHECK_EQ(sock_args_socket_error(rx), SOCK_SOCKET_ERROR_SUCCESS);
        CHECK_EQ(sock_args_bytes_transferred(rx), len);
        CHECK(memcmp(in, out, (size_t)len) == 0);
    }
    CHECK(pending > 0);
    CHECK(synchronous > 0);

    /* A send larger than the socket buffers goes pending and arrives whole. */
    uint8_t *big = malloc(LARGE), *got = malloc(LARGE);
    CHECK(big != NULL && got != NULL);
    for (size_t i = 0; i < LARGE; i++)
        big[i] = (uint8_t)(i * 131 + (i >> 12));
    int send_done = waiter_count(&ws);
    CHECK(sock_args_set_buffer(tx, big, LARGE));
    bool send_pending = sock_send_async(client, tx);
    CHECK(send_pending || sock_last_status() == SOCK_STATUS_OK);
    size_t have = 0;
    while (have < LARGE) {
        CHECK(sock_args_set_buffer(rx, got + have, LARGE - have));
        int32_t err = complete(sock_receive_async, server, rx, &wr, NULL);
        CHECK_EQ(err, SOCK_SOCKET_ERROR_SUCCESS);
        CHECK(sock_args_bytes_transferred(rx) > 0);
        have += sock_args_bytes_transferred(rx);
    }
    if (send_pending)
        CHECK(wait_for(&ws, send_done + 1));
    CHECK_EQ(sock_args_socket_error(tx), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(sock_args_bytes_transferred(tx), LARGE);
    CHECK(memcmp(big, got, LARGE) == 0);
    free(big);
    free(got);
    sock_free(client);
    sock_free(server);
    sock_args_free(tx);
    sock_args_free(rx);
    waiter_destroy(&ws);
    waiter_destroy(&wr);
    CHECK(restart_with(0));
}

static void test_shutdown_during_the_spin_is_prompt_and_aborts_pending_operations(void)
{
    /* The longest window: a Stop left for the window's end would take about a second. */
    CHECK(restart_with(1000000));
    sock *client, *server;
    CHECK(connected_pair(&client, &server));
    waiter w, quiet;
    waiter_init(&w);
    waiter_init(&quiet);
    char buf[8], other[8];
    sock_args *e = sock_args_new(on_completed, &w);
    sock_args *waiting = sock_args_new(on_completed, &quiet);
    CHECK(sock_args_set_buffer(waiting, other, sizeof other));
    CHECK(sock_receive_async(client, waiting)); /* nothing comes for it */
    CHECK(sock_args_set_buffer(e, buf, sizeof buf));
    CHECK(sock_receive_async(server, e));
    sock_args *tx = sock_args_new(on_completed, &w);
    CHECK(sock_args_set_buffer(tx, "spin", 4));
    CHECK(!sock_send_async(client, tx));
    CHECK(wait_for(&w, 1)); /* a turn with work: the reactor spins from here */
    CHECK_EQ(w.bytes, 4);

    double start = monotonic_ms();
    sock_runtime_shutdown();
    double took = monotonic_ms() - start;
    CHECK_EQ(sock_last_status(), SOCK_STATUS_OK);
    CHECK_EQ(waiter_count(&quiet), 1);
    CHECK_EQ(quiet.error, SOCK_SOCKET_ERROR_OPERATION_ABORTED);
    /* Half the window: the Stop was seen during the spin, not after it. */
    if (took >= 500)
        fprintf(stderr, "  shutdown took %.0f ms\n", took);
    CHECK(took < 500);
    sock_free(client);
    sock_free(server);
    sock_args_free(e);
    sock_args_free(waiting);
    sock_args_free(tx);
    waiter_destroy(&w);
    waiter_destroy(&quiet);
    CHECK(restart_with(0));
}

/* ---- the spin itself ------------------------------------------------------ */

/* One completion through the reactor, then the CPU time the process uses while this thread
 * blocks: during the window (*during) and after it (*after). */
static int cpu_after_one_completion(uint32_t busy_poll_us, double *during, double *after)
{
    CHECK_OR(restart_with(busy_poll_us), 0);
    sock *s;
    int peer = connected_to_raw(&s);
    CHECK_OR(peer >= 0, 0);
    waiter w;
    waiter_init(&w);
    char buf[8];
    sock_args *e = sock_args_new(on_completed, &w);
    CHECK_OR(sock_args_set_buffer(e, buf, sizeof buf), 0);
    CHECK_OR(sock_receive_async(s, e), 0);
    CHECK_OR(write(peer, "x", 1) == 1, 0);
    CHECK_OR(wait_for(&w, 1), 0);
    double t0 = process_cpu_ms();
    block_for_ms(WINDOW_US / 1000 + 200);
    double t1 = process_cpu_ms();
    block_for_ms(300);
    double t2 = process_cpu_ms();
    *during = t1 - t0;
    *after = t2 - t1;
    fprintf(stderr, "  busy poll %u us: %.1f ms of CPU in the window, %.1f ms after it\n",
            busy_poll_us, *during, *after);
    close(peer);
    sock_free(s);
    sock_args_free(e);
    waiter_destroy(&w);
    return 1;
}

static void test_after_a_completion_the_reactor_spins_for_the_window_then_sleeps(void)
{
    SKIP_UNDER_VALGRIND();
    double during, after;
    CHECK(cpu_after_one_completion(WINDOW_US, &during, &after));
    /* A spinning reactor burns CPU for the window even on a shared machine (a quarter of it
     * at least), and nothing once it has passed. */
    CHECK(during >= WINDOW_US / 1000 / 4);
    CHECK(after < 20);
    CHECK(restart_with(0));
}

static void test_without_busy_poll_an_idle_runtime_uses_no_cpu(void)
{
    SKIP_UNDER_VALGRIND();
    double during, after;
    CHECK(cpu_after_one_completion(0, &during, &after));
    CHECK(during < 20);
    CHECK(after < 20);
}

/* Echoes what comes on its socket from callbacks: receive, send it back, receive again. */
typedef struct {
    sock *s;
    sock_args *rx, *tx;
    char buf[64];
} echo;

static void echo_receive(echo *ec);

static void echo_back(echo *ec)
{
    size_t n = sock_args_bytes_transferred(ec->rx);
    if (n == 0 || sock_args_socket_error(ec->rx) != SOCK_SOCKET_ERROR_SUCCESS)
        return; /* the peer is gone, or the socket closed */
    sock_args_set_buffer(ec->tx, ec->buf, n);
    if (!sock_send_async(ec->s, ec->tx) && sock_last_status() == SOCK_STATUS_OK)
        echo_receive(ec);
}

static void on_echo_received(sock *s, sock_args *e, void *token)
{
    (void)s;
    (void)e;
    echo_back(token);
}

static void on_echo_sent(sock *s, sock_args *e, void *token)
{
    (void)s;
    (void)e;
    echo_receive(token);
}

static void echo_receive(echo *ec)
{
    sock_args_set_buffer(ec->rx, ec->buf, sizeof ec->buf);
    if (!sock_receive_async(ec->s, ec->rx) && sock_last_status() == SOCK_STATUS_OK)
        echo_back(ec);
}

/* Round trips from a blocking peer to a library echo: the reactor's voluntary context
 * switches over them, or -1. */
static long reactor_switches_over_ping_pong(uint32_t busy_poll_us, int rounds)
{
    CHECK_OR(restart_with(busy_poll_us), -1);
    echo ec;
    memset(&ec, 0, sizeof ec);
    int peer = connected_to_raw(&ec.s);
    CHECK_OR(peer >= 0, -1);
    int one = 1;
    setsockopt(peer, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    CHECK_OR(sock_set_option(ec.s, SOCK_OPTION_NO_DELAY, 1), -1);
    ec.rx = sock_args_new(on_echo_received, &ec);
    ec.tx = sock_args_new(on_echo_sent, &ec);
    echo_receive(&ec);
    long before = -1;
    for (int i = 0; i < rounds + 10; i++) {
        if (i == 10) /* after a few to warm up */
            before = reactor_voluntary_switches();
        char out[64], in[64];
        memset(out, 'a' + i % 26, sizeof out);
        CHECK_OR(write(peer, out, sizeof out) == (ssize_t)sizeof out, -1);
        CHECK_OR(read_exact(peer, in, sizeof in), -1);
        CHECK_OR(memcmp(in, out, sizeof in) == 0, -1);
    }
    long switches = reactor_voluntary_switches() - before;
    fprintf(stderr, "  busy poll %u us: %ld voluntary switches of the reactor in %d round trips\n",
            busy_poll_us, switches, rounds);
    close(peer);
    sock_runtime_shutdown(); /* the echo's receive ends (aborted) before its args go */
    sock_free(ec.s);
    sock_args_free(ec.rx);
    sock_args_free(ec.tx);
    return switches;
}

static void test_a_spinning_reactor_catches_round_trips_without_sleeping(void)
{
    enum { ROUNDS = 300 };
    SKIP_UNDER_VALGRIND();
    /* Without busy poll the reactor sleeps between most requests and the next (not all: a
     * request may come before the reactor is back in its wait). */
    long sleeping = reactor_switches_over_ping_pong(0, ROUNDS);
    CHECK(sleeping >= ROUNDS / 4);
    /* With it, the next request comes inside the window, and is caught by the spin. */
    long spinning = reactor_switches_over_ping_pong(WINDOW_US, ROUNDS);
    CHECK(spinning >= 0);
    CHECK(spinning <= ROUNDS / 10);
    CHECK(restart_with(0));
}

int main(void)
{
    /* First: a child inherits what this process set, and a setting outranks the
     * environment. */
    RUN(test_environment_variable_sets_the_default);
    RUN(test_busy_poll_is_set_before_start_checked_and_kept_across_shutdown);
    RUN(test_echo_of_many_messages_with_busy_poll);
    RUN(test_shutdown_during_the_spin_is_prompt_and_aborts_pending_operations);
    RUN(test_after_a_completion_the_reactor_spins_for_the_window_then_sleeps);
    RUN(test_without_busy_poll_an_idle_runtime_uses_no_cpu);
    RUN(test_a_spinning_reactor_catches_round_trips_without_sleeping);
    return h_finish("test_busy_poll");
}

/*
 * Managed hosts (Mono, .NET) interrupt every thread of the process, the reactor's too, to
 * stop the world for garbage collection. This test does the same: a thread keeps sending
 * SIGUSR1 (installed without SA_RESTART, so system calls really fail with EINTR) to the
 * reactor thread and to the test's own thread while traffic runs through the library. Every
 * operation must still complete exactly once with the right bytes.
 */
#include "harness.h"

#include <dirent.h>
#include <signal.h>
#include <sys/syscall.h>

static atomic_int reactor_hits, caller_hits, stop_signalling;
static pid_t reactor_tid, caller_tid;

static void on_signal(int sig)
{
    (void)sig;
    pid_t me = (pid_t)syscall(SYS_gettid);
    if (me == reactor_tid)
        atomic_fetch_add(&reactor_hits, 1);
    else if (me == caller_tid)
        atomic_fetch_add(&caller_hits, 1);
}

/* The reactor thread's id, found by its name. */
static pid_t find_reactor(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return 0;
    pid_t found = 0;
    struct dirent *entry;
    while (!found && (entry = readdir(d)) != NULL) {
        char path[300], name[64] = {0};
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", entry->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        if (fgets(name, sizeof name, f) && strncmp(name, "sockasync-react", 15) == 0)
            found = (pid_t)atoi(entry->d_name);
        fclose(f);
    }
    closedir(d);
    return found;
}

static void *signaller(void *unused)
{
    (void)unused;
    pid_t pid = getpid();
    while (!atomic_load(&stop_signalling)) {
        syscall(SYS_tgkill, pid, reactor_tid, SIGUSR1);
        syscall(SYS_tgkill, pid, caller_tid, SIGUSR1);
        sched_yield();
    }
    return NULL;
}

/*
 * Ping-pong driven from callbacks: each side's receive callback sends the reply and issues
 * the next receive. A 64-byte message in flight one at a time never fills a send buffer, so
 * a side's send args are always free again when its next reply is due.
 */
typedef struct {
    sock *s;
    sock_args *recv_args, *send_args;
    char inbox[64], outbox[64];
    int rounds_left;
    waiter *finished;
    atomic_int *errors;
} side;

static void note_finished(side *p)
{
    waiter_signal(p->finished);
}

static void side_sent(sock *s, sock_args *e, void *token)
{
    (void)s;
    side *p = token;
    if (sock_args_socket_error(e) != 0 || sock_args_bytes_transferred(e) != 64)
        atomic_fetch_add(p->errors, 1);
}

/* Handles one received message; returns whether to receive again. */
static bool side_handle(side *p)
{
    if (sock_args_socket_error(p->recv_args) != 0 ||
        sock_args_bytes_transferred(p->recv_args) != 64) {
        atomic_fetch_add(p->errors, 1);
        note_finished(p);
        return false;
    }
    memcpy(p->outbox, p->inbox, 64);
    if (!sock_send_async(p->s, p->send_args)) {
        if (sock_last_status() != SOCK_STATUS_OK)
            atomic_fetch_add(p->errors, 1);
        else
            side_sent(p->s, p->send_args, p);
    }
    if (--p->rounds_left == 0) {
        note_finished(p);
        return false;
    }
    return true;
}

/* Receives until a receive goes pending (its callback carries on) or the side is done. */
static void side_receive_loop(side *p)
{
    for (;;) {
        if (sock_receive_async(p->s, p->recv_args))
            return;
        if (sock_last_status() != SOCK_STATUS_OK) {
            atomic_fetch_add(p->errors, 1);
            note_finished(p);
            return;
        }
        if (!side_handle(p))
            return;
    }
}

static void side_received(sock *s, sock_args *e, void *token)
{
    (void)s;
    (void)e;
    side *p = token;
    if (side_handle(p))
        side_receive_loop(p);
}

static void test_ping_pong_and_bulk_transfer_survive_a_signal_storm(void)
{
    sock *a, *b;
    CHECK(connected_pair(&a, &b));
    reactor_tid = find_reactor();
    CHECK(reactor_tid > 0);
    caller_tid = (pid_t)syscall(SYS_gettid);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: system calls fail with EINTR */
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);

    pthread_t t;
    atomic_store(&stop_signalling, 0);
    CHECK(pthread_create(&t, NULL, signaller, NULL) == 0);

    /* 1. Ping-pong: 300 round trips, a serving first. */
    atomic_int errors = 0;
    waiter finished;
    waiter_init(&finished);
    side pa = {.s = a, .rounds_left = 300, .finished = &finished, .errors = &errors};
    side pb = {.s = b, .rounds_left = 300, .finished = &finished, .errors = &errors};
    side *sides[2] = {&pa, &pb};
    for (int i = 0; i < 2; i++) {
        side *p = sides[i];
        p->recv_args = sock_args_new(side_received, p);
        p->send_args = sock_args_new(side_sent, p);
        sock_args_set_buffer(p->recv_args, p->inbox, 64);
        sock_args_set_buffer(p->send_args, p->outbox, 64);
    }
    side_receive_loop(&pb);
    memset(pa.outbox, 'a', 64);
    CHECK(sock_send_async(a, pa.send_args) || sock_last_status() == SOCK_STATUS_OK);
    side_receive_loop(&pa);

    /* 2. Meanwhile, a bulk transfer on a second pair, driven from this thread. */
    sock *c, *d;
    CHECK(connected_pair(&c, &d));
    enum { TOTAL = 8 << 20 };
    unsigned char *out = malloc(TOTAL), *in = malloc(TOTAL);
    CHECK(out && in);
    for (size_t i = 0; i < TOTAL; i++)
        out[i] = (unsigned char)(i * 31 + 7);
    waiter ws, wr;
    waiter_init(&ws);
    waiter_init(&wr);
    sock_args *se = sock_args_new(on_completed, &ws);
    sock_args *re = sock_args_new(on_completed, &wr);
    sock_args_set_buffer(se, out, TOTAL);
    bool send_pending = sock_send_async(c, se);
    CHECK(send_pending || sock_last_status() == SOCK_STATUS_OK);
    size_t got = 0;
    while (got < TOTAL) {
        sock_args_set_buffer(re, in + got, TOTAL - got);
        int32_t err = complete(sock_receive_async, d, re, &wr, NULL);
        CHECK_EQ(err, 0);
        CHECK(sock_args_bytes_transferred(re) > 0);
        got += sock_args_bytes_transferred(re);
    }
    if (send_pending)
        CHECK(wait_for(&ws, 1));
    CHECK_EQ(sock_args_socket_error(se), 0);
    CHECK_EQ(sock_args_bytes_transferred(se), TOTAL);
    CHECK(memcmp(in, out, TOTAL) == 0);

    bool both_finished = wait_for(&finished, 2);
    atomic_store(&stop_signalling, 1);
    pthread_join(t, NULL);
    signal(SIGUSR1, SIG_IGN);

    CHECK(both_finished);
    CHECK_EQ(atomic_load(&errors), 0);
    CHECK_EQ(pa.rounds_left, 0);
    CHECK_EQ(pb.rounds_left, 0);
    CHECK(atomic_load(&reactor_hits) > 0);
    CHECK(atomic_load(&caller_hits) > 0);
    fprintf(stderr, "       signals taken: reactor %d, caller %d\n",
            atomic_load(&reactor_hits), atomic_load(&caller_hits));

    sock_free(a);
    sock_free(b);
    sock_free(c);
    sock_free(d);
    for (int i = 0; i < 2; i++) {
        sock_args_free(sides[i]->recv_args);
        sock_args_free(sides[i]->send_args);
    }
    sock_args_free(se);
    sock_args_free(re);
    free(out);
    free(in);
    waiter_destroy(&ws);
    waiter_destroy(&wr);
    waiter_destroy(&finished);
}

int main(void)
{
    RUN(test_ping_pong_and_bulk_transfer_survive_a_signal_storm);
    return h_finish("test_signals");
}

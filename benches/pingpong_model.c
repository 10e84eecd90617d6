/*
 * pingpong_model: bench_pingpong's sockasync round trip rebuilt from bare system calls, so
 * the cost of each step the library's path adds over raw blocking send/recv can be priced
 * by leaving it out. Not part of run.sh; a diagnostic for the ping-pong gap.
 *
 *   pingpong_model SERVER_TRY CLIENT_MODE ROUND_TRIPS
 *
 * A "reactor" thread waits in epoll_wait (edge-triggered, both directions, as the library
 * registers sockets) on the server's socket and the client's. A server edge: recv, send
 * the echo, and with SERVER_TRY=1 recv once more, which finds nothing (EAGAIN): what the
 * server's re-armed sock_receive_async does first inside its callback. A client edge: recv
 * the response and sem_post, as the library completes the client's pending receive and its
 * callback posts the waiting thread.
 * The client thread sends the request, then with CLIENT_MODE
 *   0  waits on the semaphore at once,
 *   1  first tries recv (EAGAIN: what sock_receive_async tries), then waits (the library's
 *      path: SERVER_TRY=1 CLIENT_MODE=1 makes the same system calls as sockasync),
 *   2  reads the response itself in a blocking recv: no hand-off between threads on the
 *      way back, only the server runs on the epoll loop.
 *   3  runs on an epoll loop of its own on its own thread, as bench_pingpong sa's client
 *      runs on its own reactor: on each edge it recvs the response and sends the next
 *      request, and with SERVER_TRY=1 recvs once more (EAGAIN, as its re-armed
 *      sock_receive_async tries first), as the server does. No semaphore: each end is one
 *      epoll loop, the shape of bench_pingpong sa in bare system calls.
 * Prints "P50 P99" in microseconds (after 1,000 untimed round trips); every response is
 * compared with its request. 127.0.0.1 only.
 */
#include "bench_common.h"

#include <fcntl.h>
#include <sys/epoll.h>

#define USAGE "pingpong_model SERVER_TRY(0|1) CLIENT_MODE(0|1|2|3) ROUND_TRIPS"

enum { MSG = 64, WARMUP = 1000 };

static int client_fd, server_fd, epoll_fd;
static bool server_try;
static sem_t response_in;
static unsigned char response[MSG];

static void set_nonblocking(int fd)
{
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0)
        DIE_ERRNO("fcntl O_NONBLOCK");
}

static void send_whole(int fd, const unsigned char *p, size_t n)
{
    if (send(fd, p, n, MSG_NOSIGNAL) != (ssize_t)n)
        DIE("send of %zu bytes did not go out whole: %s", n, strerror(errno));
}

static void *reactor(void *arg)
{
    (void)arg;
    static unsigned char buf[64 * 1024];
    struct epoll_event events[64];
    for (;;) {
        int n = epoll_wait(epoll_fd, events, 64, -1);
        if (n < 0 && errno != EINTR)
            DIE_ERRNO("epoll_wait");
        for (int i = 0; i < n; i++) {
            if (!(events[i].events & EPOLLIN))
                continue;
            if (events[i].data.fd == server_fd) {
                ssize_t got = recv(server_fd, buf, sizeof buf, 0);
                if (got == 0)
                    return NULL;
                while (got > 0) {
                    send_whole(server_fd, buf, (size_t)got);
                    /* With a client that reads for itself, the next request may be in by
                     * now: echo it too. */
                    got = server_try ? recv(server_fd, buf, sizeof buf, 0) : -1;
                }
            } else {
                ssize_t got = recv(client_fd, response, MSG, 0);
                if (got == MSG)
                    sem_post(&response_in);
                else if (got >= 0) /* 64 bytes on loopback arrive in one segment */
                    DIE("the reactor received %zd bytes of a response", got);
            }
        }
    }
}

/* CLIENT_MODE 3: the client's own epoll loop. Sends the first request, then on each edge
 * takes the response, records it and sends the next, until `rounds` after the warm-up. */
static uint64_t loop_rounds, *loop_latency_ns;

static void *client_loop(void *arg)
{
    int ep = *(int *)arg;
    unsigned char request[MSG];
    struct epoll_event events[8];
    uint64_t seq = 0, t0 = 0;
    for (;;) {
        memcpy(request, &seq, sizeof seq);
        for (size_t i = sizeof seq; i < MSG; i++)
            request[i] = (unsigned char)(seq * 31u + i);
        t0 = now_ns();
        send_whole(client_fd, request, MSG);
        ssize_t got = server_try ? recv(client_fd, response, MSG, 0) : -1;
        while (got < 0) {
            int n = epoll_wait(ep, events, 8, -1);
            if (n < 0 && errno != EINTR)
                DIE_ERRNO("epoll_wait");
            for (int i = 0; i < n && got < 0; i++) {
                if (events[i].events & EPOLLIN)
                    got = recv(client_fd, response, MSG, 0);
            }
        }
        if (got != MSG) /* 64 bytes on loopback arrive in one segment */
            DIE("the client received %zd bytes of a response", got);
        if (memcmp(request, response, MSG) != 0)
            DIE("the response to request %" PRIu64 " differs from the request", seq);
        if (seq >= WARMUP)
            loop_latency_ns[seq - WARMUP] = now_ns() - t0;
        if (++seq == WARMUP + loop_rounds)
            return NULL;
    }
}

static int compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    bench_init("pingpong_model");
    if (argc != 4 || (strcmp(argv[1], "0") != 0 && strcmp(argv[1], "1") != 0) ||
        strlen(argv[2]) != 1 || argv[2][0] < '0' || argv[2][0] > '3') {
        fprintf(stderr, "usage: %s\n", USAGE);
        return 2;
    }
    server_try = argv[1][0] == '1';
    int client_mode = argv[2][0] - '0';
    uint64_t rounds = parse_count(argv[3], USAGE);

    int port, listen_fd = raw_listener(&port);
    client_fd = raw_connect(port);
    server_fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (server_fd < 0)
        DIE_ERRNO("accept");
    close(listen_fd);
    set_nodelay(client_fd);
    set_nodelay(server_fd);
    set_nonblocking(server_fd);
    epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd < 0)
        DIE_ERRNO("epoll_create1");
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.fd = server_fd};
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, server_fd, &ev) != 0)
        DIE_ERRNO("epoll_ctl");
    int client_epoll = -1;
    if (client_mode != 2) {
        set_nonblocking(client_fd);
        ev.data.fd = client_fd;
        client_epoll = client_mode == 3 ? epoll_create1(EPOLL_CLOEXEC) : epoll_fd;
        if (client_epoll < 0 || epoll_ctl(client_epoll, EPOLL_CTL_ADD, client_fd, &ev) != 0)
            DIE_ERRNO("epoll_ctl");
    }
    sem_init(&response_in, 0, 0);
    pthread_t thread;
    if (pthread_create(&thread, NULL, reactor, NULL) != 0)
        DIE("pthread_create failed");

    uint64_t *latency_ns = xmalloc(rounds * sizeof *latency_ns);
    if (client_mode == 3) {
        loop_rounds = rounds;
        loop_latency_ns = latency_ns;
        pthread_t client;
        if (pthread_create(&client, NULL, client_loop, &client_epoll) != 0)
            DIE("pthread_create failed");
        pthread_join(client, NULL);
    }
    unsigned char request[MSG];
    for (uint64_t seq = 0; client_mode != 3 && seq < WARMUP + rounds; seq++) {
        memcpy(request, &seq, sizeof seq);
        for (size_t i = sizeof seq; i < MSG; i++)
            request[i] = (unsigned char)(seq * 31u + i);
        uint64_t t0 = now_ns();
        send_whole(client_fd, request, MSG);
        bool have = false;
        if (client_mode == 2) {
            for (size_t got = 0; got < MSG;) {
                ssize_t n = recv(client_fd, response + got, MSG - got, 0);
                if (n <= 0)
                    DIE("client recv: %s", n == 0 ? "end of stream" : strerror(errno));
                got += (size_t)n;
            }
            have = true;
        } else if (client_mode == 1) {
            /* Usually EAGAIN; if the response is already in, the reactor's recv for this
             * edge finds nothing and posts nothing. */
            have = recv(client_fd, response, MSG, 0) == MSG;
        }
        if (!have)
            sem_wait_all(&response_in);
        uint64_t t1 = now_ns();
        if (memcmp(request, response, MSG) != 0)
            DIE("the response to request %" PRIu64 " differs from the request", seq);
        if (seq >= WARMUP)
            latency_ns[seq - WARMUP] = t1 - t0;
    }
    qsort(latency_ns, rounds, sizeof *latency_ns, compare_u64);
    printf("%.2f %.2f\n", (double)latency_ns[rounds / 2] / 1e3,
           (double)latency_ns[rounds * 99 / 100] / 1e3);
    return 0;
}

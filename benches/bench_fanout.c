/*
 * bench_fanout: many connections echoing 16 KiB messages through one echo server, with
 * small buffers on the way back so most of the server's sends go pending.
 *
 *   bench_fanout epoll|uv|sa CONNECTIONS SECONDS [THREADS]
 *
 * Prints "ECHOES_PER_SECOND RSS_BYTES_PER_CONNECTION" on stdout and one "stats:" line on
 * stderr: echoes, the server's sends (one per message received), how many of them went
 * pending (sa: sock_send_async returned true; epoll: send(2) hit EAGAIN before the whole
 * message was out; uv: uv_write left bytes queued) and that as a percentage, RSS before and
 * after, the number of threads in the server process, and the CPU time (user + system)
 * of the server and of the client over the timed window, as a percentage of one CPU, and
 * the server's per completed echo (a client at ~100% is the limit, not the server).
 * THREADS (default 1) is the number of server threads that run an event loop: epoll loops,
 * libuv loops, or sockasync's reactor threads (handed to the library before its first use
 * with sock_runtime_configure); "threads=" shows how many threads the server process has.
 *
 * Structure. The measured process runs only the echo server of the mechanism under test;
 * the client is a separate (forked) process running a plain edge-triggered epoll loop, the
 * same code for every mechanism, so its memory and CPU accounting are not the server's.
 * Each process needs a descriptor per connection: both raise RLIMIT_NOFILE to the hard
 * limit. The server's sockets get SO_SNDBUF 4 KiB (set on the listener, inherited on
 * accept), the client's SO_RCVBUF 4 KiB (see SERVER_SNDBUF below for why both).
 *
 *   1. the server sets up its listener; RSS "before" is read;
 *   2. the client connects CONNECTIONS sockets to 127.0.0.1; once the server has accepted
 *      them all and they are idle (each waiting for data), RSS "after" is read:
 *      (after - before) / CONNECTIONS is the user-space memory per idle connection
 *      (the server program's own per-connection struct included: epoll 32 B, sa 48 B with
 *      the allocator's header; for uv the per-connection uv_tcp_t is libuv's handle);
 *   3. the client sends one 16 KiB message on every connection and, each time a message
 *      has come back whole, the next one, for SECONDS; echoes completed in that time /
 *      elapsed is the result. The messages in flight at the end are then drained (and
 *      checked) within 10 s, else the run fails (a lost completion).
 * Every echoed byte is compared with what was sent (a per-connection, per-message shifted
 * pattern); a mismatch, an error or a lost echo exits non-zero.
 *
 * Servers (all allocate a message buffer only while data is moving, so an idle connection
 * holds none):
 *   epoll  edge-triggered epoll loops, one per thread, each with its own epoll instance;
 *          the first also accepts and hands the connections to the loops in turn. Reads
 *          into the thread's scratch buffer and sends it back; what a send leaves (EAGAIN)
 *          is copied to a malloc'd buffer and sent on EPOLLOUT before reading more.
 *   uv     libuv loops, one per thread, each with its own listener on the same port
 *          (SO_REUSEPORT; the kernel spreads the connections): uv_listen, uv_accept,
 *          uv_read_start (alloc_cb mallocs 16 KiB), uv_write of what was read, freed in the
 *          write callback.
 *   sa     sockasync, all from callbacks (on the library's reactor threads): accept; per
 *          connection one args object cycling zero-byte receive (wait for data, no buffer)
 *          -> receive into a malloc'd 16 KiB buffer -> sock_send_async of what arrived ->
 *          free -> ...
 *          With SOCKASYNC_BACKEND=io_uring and BENCH_BATCH_SENDS=1 in the environment,
 *          every accepted socket gets SOCK_OPTION_BATCH_SENDS: the echoes of a reactor
 *          turn go to the kernel together (benches/run.sh's "sa-uring").
 */
#include "bench_common.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <uv.h>

#define USAGE "bench_fanout epoll|uv|sa CONNECTIONS SECONDS [THREADS]"

/* Small buffers on the path back to the client, so most echoes cannot go out at once: the
 * server's sockets (the listener's, inherited on accept) get SO_SNDBUF 4 KiB and the
 * client's SO_RCVBUF 4 KiB (the kernel doubles both). A small send buffer alone would not
 * do on loopback (the receiver would take the data at once); the small window behind it
 * makes the unsent rest of a 16 KiB echo wait for the client to read. The server's own
 * receive buffer stays at the default, so a message usually arrives in one receive and
 * the server makes one send per message. */
enum {
    MSG = 16 * 1024,
    PERIOD = 251,
    SERVER_SNDBUF = 4096,
    CLIENT_RCVBUF = 4096,
    BUF = 16 * 1024
};

static atomic_uint_fast64_t accepted, server_sends, server_waits;
static atomic_bool finishing; /* the client is done: errors from closing are expected */
static uint64_t nconn;

/* A number field of /proc/self/status ("VmRSS:" in kB, "Threads:"). */
static long proc_status(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        DIE_ERRNO("open /proc/self/status");
    char line[256];
    size_t len = strlen(field);
    long v = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, field, len) == 0)
            v = strtol(line + len, NULL, 10);
    }
    fclose(f);
    if (v < 0)
        DIE("no %s in /proc/self/status", field);
    return v;
}

/* Each process (server and client) holds one descriptor per connection, plus a few. */
static void raise_nofile(void)
{
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) != 0)
        DIE_ERRNO("getrlimit");
    r.rlim_cur = r.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &r) != 0)
        DIE_ERRNO("setrlimit");
    if (r.rlim_cur < nconn + 64)
        DIE("RLIMIT_NOFILE hard limit %llu is too low for %" PRIu64
            " connections (a process needs one descriptor per connection, plus 64)",
            (unsigned long long)r.rlim_cur, nconn);
}

static void set_buffer_size(int fd, int option, int bytes, const char *what)
{
    if (setsockopt(fd, SOL_SOCKET, option, &bytes, sizeof bytes) != 0)
        DIE_ERRNO(what);
}

static int backlog(void)
{
    return nconn < 4096 ? (int)nconn + 16 : 4096;
}

static void write_all(int fd, const void *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            DIE_ERRNO("write to pipe");
        p = (const char *)p + w;
        n -= (size_t)w;
    }
}

static bool read_all(int fd, void *p, size_t n)
{
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        p = (char *)p + r;
        n -= (size_t)r;
    }
    return true;
}

/* ==== the client (a separate process; the same for every mechanism) ==================== */

typedef struct {
    int fd;
    bool active;    /* a message is in flight */
    uint32_t k;     /* message number */
    uint32_t sent;  /* bytes of the current message sent */
    uint32_t recvd; /* bytes of its echo received */
} cconn;

static unsigned char ref[MSG + PERIOD];
static unsigned char scratch[MSG];

static size_t msg_off(uint64_t c, uint32_t k)
{
    return (size_t)((c * 31u + k) % PERIOD);
}

/* CPU time (user + system, all threads) a process has used so far, in clock ticks. */
static uint64_t cpu_ticks(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        DIE_ERRNO("open /proc/PID/stat");
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    /* Fields 14 and 15 (utime, stime) follow the command name, which ends with ')'. */
    char *p = strrchr(buf, ')');
    unsigned long long utime, stime;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
                     &stime) != 2)
        DIE("cannot parse %s", path);
    return utime + stime;
}

/* The client measures both processes' CPU over the timed window, so the server's figure
 * covers the same interval as its echoes (and says whether the client was the limit). */
typedef struct {
    uint64_t echoes, elapsed_ns;
    uint64_t server_cpu_ticks, client_cpu_ticks;
} client_result;

/* Moves one connection as far as it goes without blocking; counts finished echoes. */
static void client_progress(cconn *cs, uint64_t i, bool running, uint64_t *echoes,
                            uint64_t *active)
{
    cconn *c = &cs[i];
    bool progress = true;
    while (c->active && progress) {
        progress = false;
        size_t off = msg_off(i, c->k);
        if (c->sent < MSG) {
            ssize_t n = send(c->fd, ref + off + c->sent, MSG - c->sent, MSG_NOSIGNAL);
            if (n > 0) {
                c->sent += (uint32_t)n;
                progress = true;
            } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                DIE("client: send on connection %" PRIu64 ": %s", i, strerror(errno));
            }
        }
        ssize_t n = recv(c->fd, scratch, MSG - c->recvd, 0);
        if (n > 0) {
            if (memcmp(scratch, ref + off + c->recvd, (size_t)n) != 0)
                DIE("client: echoed bytes differ from what was sent (connection %" PRIu64
                    ", message %u, offset %u)",
                    i, c->k, c->recvd);
            c->recvd += (uint32_t)n;
            progress = true;
            if (c->recvd > c->sent)
                DIE("client: more echoed than sent on connection %" PRIu64, i);
            if (c->recvd == MSG) {
                if (running)
                    (*echoes)++;
                c->k++;
                c->sent = c->recvd = 0;
                if (!running) {
                    c->active = false;
                    (*active)--;
                }
            }
        } else if (n == 0) {
            DIE("client: connection %" PRIu64 " closed by the server", i);
        } else if (errno != EAGAIN && errno != EINTR) {
            DIE("client: recv on connection %" PRIu64 ": %s", i, strerror(errno));
        }
    }
}

static void client_main(int port_rd, int res_wr, double seconds)
{
    bench_name = "bench_fanout client";
    raise_nofile(); /* inherited from the parent; checked again for this process */
    int port;
    if (!read_all(port_rd, &port, sizeof port))
        _exit(1); /* the server failed; it reports why */
    for (size_t i = 0; i < sizeof ref; i++)
        ref[i] = pattern_byte(i % PERIOD);

    cconn *cs = calloc(nconn, sizeof *cs);
    if (!cs)
        DIE("out of memory");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        DIE_ERRNO("epoll_create1");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (uint64_t i = 0; i < nconn; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            DIE_ERRNO("client: socket");
        set_buffer_size(fd, SO_RCVBUF, CLIENT_RCVBUF, "client: setsockopt SO_RCVBUF");
        if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
            DIE("client: connect %" PRIu64 " to 127.0.0.1: %s", i, strerror(errno));
        if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0)
            DIE_ERRNO("fcntl O_NONBLOCK");
        cs[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.u64 = i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
            DIE_ERRNO("epoll_ctl");
    }
    char go = 'c';
    write_all(res_wr, &go, 1); /* connected */
    if (!read_all(port_rd, &go, 1))
        _exit(1);

    uint64_t echoes = 0, active = nconn;
    pid_t server = getppid();
    uint64_t server_cpu0 = cpu_ticks(server), client_cpu0 = cpu_ticks(getpid());
    uint64_t server_cpu = 0, client_cpu = 0;
    uint64_t start = now_ns(), end = start + (uint64_t)(seconds * 1e9);
    bool running = true;
    for (uint64_t i = 0; i < nconn; i++)
        cs[i].active = true;
    for (uint64_t i = 0; i < nconn; i++)
        client_progress(cs, i, running, &echoes, &active);
    struct epoll_event evs[256];
    uint64_t elapsed = 0, drain_deadline = 0;
    while (active > 0) {
        int n = epoll_wait(ep, evs, 256, 5);
        if (n < 0 && errno != EINTR)
            DIE_ERRNO("epoll_wait");
        for (int j = 0; j < n; j++)
            client_progress(cs, evs[j].data.u64, running, &echoes, &active);
        uint64_t t = now_ns();
        if (running && t >= end) {
            running = false;
            elapsed = t - start;
            server_cpu = cpu_ticks(server) - server_cpu0;
            client_cpu = cpu_ticks(getpid()) - client_cpu0;
            drain_deadline = t + 10000000000ull;
            /* A connection between messages would never get another event. */
            for (uint64_t i = 0; i < nconn; i++) {
                if (cs[i].active && cs[i].sent == 0 && cs[i].recvd == 0) {
                    cs[i].active = false;
                    active--;
                }
            }
        }
        if (!running && t >= drain_deadline)
            DIE("client: lost completions: %" PRIu64 " connection(s) still waiting for "
                "their echo 10 s after the run ended (e.g. connection %" PRIu64 ")",
                active, (uint64_t)0);
    }
    client_result r = {echoes, elapsed, server_cpu, client_cpu};
    write_all(res_wr, &r, sizeof r);
    for (uint64_t i = 0; i < nconn; i++)
        close(cs[i].fd);
    _exit(0);
}

/* ==== epoll server ======================================================================= */

typedef struct {
    int fd;
    uint32_t off, len; /* unsent bytes out[off..len) */
    unsigned char *out;
} econn;

enum { MAX_THREADS = 64 };

/* THREADS epoll loops, each with its own epoll instance; loop 0 also accepts, handing the
 * connections to the loops in turn (round-robin, as sockasync spreads its sockets). */
static int e_listen_fd, e_eps[MAX_THREADS];
static unsigned e_threads;

static void e_close(econn *c)
{
    close(c->fd);
    free(c->out);
    free(c);
}

/* Returns false if the connection was closed. */
static bool e_flush(econn *c)
{
    while (c->off < c->len) {
        ssize_t n = send(c->fd, c->out + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (n > 0) {
            c->off += (uint32_t)n;
        } else if (n < 0 && errno == EAGAIN) {
            return true;
        } else if (n < 0 && errno != EINTR) {
            if (!atomic_load(&finishing))
                DIE("epoll server: send: %s", strerror(errno));
            e_close(c);
            return false;
        }
    }
    free(c->out);
    c->out = NULL;
    c->off = c->len = 0;
    return true;
}

static void e_ready(econn *c)
{
    static _Thread_local unsigned char buf[BUF];
    for (;;) {
        if (c->out) {
            if (!e_flush(c))
                return;
            if (c->out)
                return; /* wait for EPOLLOUT */
        }
        ssize_t n = recv(c->fd, buf, BUF, 0);
        if (n > 0) {
            size_t done = 0;
            atomic_fetch_add_explicit(&server_sends, 1, memory_order_relaxed);
            while (done < (size_t)n) {
                ssize_t w = send(c->fd, buf + done, (size_t)n - done, MSG_NOSIGNAL);
                if (w > 0) {
                    done += (size_t)w;
                } else if (w < 0 && errno == EAGAIN) {
                    atomic_fetch_add_explicit(&server_waits, 1, memory_order_relaxed);
                    c->out = xmalloc((size_t)n - done);
                    memcpy(c->out, buf + done, (size_t)n - done);
                    c->off = 0;
                    c->len = (uint32_t)((size_t)n - done);
                    return;
                } else if (w < 0 && errno != EINTR) {
                    if (!atomic_load(&finishing))
                        DIE("epoll server: send: %s", strerror(errno));
                    e_close(c);
                    return;
                }
            }
        } else if (n == 0) {
            e_close(c);
            return;
        } else if (errno == EAGAIN) {
            return;
        } else if (errno != EINTR) {
            if (!atomic_load(&finishing))
                DIE("epoll server: recv: %s", strerror(errno));
            e_close(c);
            return;
        }
    }
}

static void e_accept_all(void)
{
    static unsigned next;
    for (;;) {
        int fd = accept4(e_listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN)
                return;
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            DIE_ERRNO("epoll server: accept4");
        }
        econn *c = calloc(1, sizeof *c);
        if (!c)
            DIE("out of memory");
        c->fd = fd;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
        if (epoll_ctl(e_eps[next++ % e_threads], EPOLL_CTL_ADD, fd, &ev) != 0)
            DIE_ERRNO("epoll_ctl");
        atomic_fetch_add(&accepted, 1);
    }
}

static void *e_main(void *arg)
{
    int ep = *(int *)arg;
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0 && errno != EINTR)
            DIE_ERRNO("epoll_wait");
        for (int j = 0; j < n; j++) {
            if (evs[j].data.ptr == NULL)
                e_accept_all();
            else
                e_ready(evs[j].data.ptr);
        }
    }
    return NULL;
}

static int start_epoll(unsigned threads)
{
    int port;
    e_listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (e_listen_fd < 0)
        DIE_ERRNO("socket");
    set_buffer_size(e_listen_fd, SO_SNDBUF, SERVER_SNDBUF, "setsockopt SO_SNDBUF");
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(e_listen_fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(e_listen_fd, backlog()) != 0 ||
        getsockname(e_listen_fd, (struct sockaddr *)&a, &len) != 0)
        DIE_ERRNO("bind/listen on 127.0.0.1");
    port = ntohs(a.sin_port);
    e_threads = threads;
    for (unsigned i = 0; i < threads; i++) {
        e_eps[i] = epoll_create1(EPOLL_CLOEXEC);
        if (e_eps[i] < 0)
            DIE_ERRNO("epoll_create1");
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.ptr = NULL};
    if (epoll_ctl(e_eps[0], EPOLL_CTL_ADD, e_listen_fd, &ev) != 0)
        DIE_ERRNO("epoll_ctl");
    for (unsigned i = 0; i < threads; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, e_main, &e_eps[i]) != 0)
            DIE("pthread_create failed");
    }
    return port;
}

/* ==== libuv server ======================================================================= */

/* THREADS libuv loops, each on its own thread with its own listening socket on the same
 * port (SO_REUSEPORT: the kernel spreads the connections over them), the way a libuv
 * server uses more than one core (libuv 1.49 names it UV_TCP_REUSEPORT). */
typedef struct {
    uv_loop_t loop;
    uv_tcp_t server;
} uv_worker;

static uv_worker uv_workers[MAX_THREADS];

typedef struct {
    uv_write_t req;
    uv_buf_t buf;
} uv_wreq;

static void uv_on_close(uv_handle_t *h)
{
    free(h);
}

static void uv_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    (void)h;
    (void)hint;
    b->base = xmalloc(BUF);
    b->len = BUF;
}

static void uv_on_write(uv_write_t *req, int status)
{
    uv_wreq *w = (uv_wreq *)req;
    if (status < 0 && !atomic_load(&finishing))
        DIE("uv server: write: %s", uv_strerror(status));
    free(w->buf.base);
    free(w);
}

static void uv_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    if (n > 0) {
        uv_wreq *w = xmalloc(sizeof *w);
        w->buf = uv_buf_init(b->base, (unsigned)n);
        atomic_fetch_add_explicit(&server_sends, 1, memory_order_relaxed);
        int rc = uv_write(&w->req, s, &w->buf, 1, uv_on_write);
        if (rc != 0)
            DIE("uv server: uv_write: %s", uv_strerror(rc));
        /* uv_write tries the write at once; bytes it could not send stay queued for the
         * loop's next writable event: that write went pending. */
        if (s->write_queue_size > 0)
            atomic_fetch_add_explicit(&server_waits, 1, memory_order_relaxed);
        return;
    }
    free(b->base);
    if (n < 0) {
        if (n != UV_EOF && !atomic_load(&finishing))
            DIE("uv server: read: %s", uv_strerror((int)n));
        uv_close((uv_handle_t *)s, uv_on_close);
    }
}

static void uv_on_conn(uv_stream_t *server, int status)
{
    if (status < 0)
        DIE("uv server: listen callback: %s", uv_strerror(status));
    uv_tcp_t *c = xmalloc(sizeof *c);
    uv_tcp_init(server->loop, c);
    int rc = uv_accept(server, (uv_stream_t *)c);
    if (rc != 0)
        DIE("uv server: uv_accept: %s", uv_strerror(rc));
    rc = uv_read_start((uv_stream_t *)c, uv_alloc, uv_on_read);
    if (rc != 0)
        DIE("uv server: uv_read_start: %s", uv_strerror(rc));
    atomic_fetch_add(&accepted, 1);
}

static void *uv_main(void *arg)
{
    uv_run(arg, UV_RUN_DEFAULT);
    return NULL;
}

static int start_uv(unsigned threads)
{
    int port = 0;
    for (unsigned i = 0; i < threads; i++) {
        uv_worker *w = &uv_workers[i];
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        int on = 1;
        if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0)
            DIE_ERRNO("uv server: socket with SO_REUSEPORT");
        set_buffer_size(fd, SO_SNDBUF, SERVER_SNDBUF, "setsockopt SO_SNDBUF");
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof a;
        if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
            getsockname(fd, (struct sockaddr *)&a, &len) != 0)
            DIE_ERRNO("uv server: bind on 127.0.0.1");
        port = ntohs(a.sin_port);
        uv_loop_init(&w->loop);
        uv_tcp_init(&w->loop, &w->server);
        int rc = uv_tcp_open(&w->server, fd);
        if (rc == 0)
            rc = uv_listen((uv_stream_t *)&w->server, backlog(), uv_on_conn);
        if (rc != 0)
            DIE("uv_listen: %s", uv_strerror(rc));
    }
    for (unsigned i = 0; i < threads; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, uv_main, &uv_workers[i].loop) != 0)
            DIE("pthread_create failed");
    }
    return port;
}

/* ==== sockasync server =================================================================== */

enum { SA_RECV0, SA_RECV, SA_SEND };

typedef struct {
    sock *s;
    sock_args *e;
    unsigned char *buf;
    int state;
} saconn;

static sock *sa_listener;
static sock_args *sa_accept_args;
static bool sa_batch_sends; /* BENCH_BATCH_SENDS=1, read before the first accept */

static void sa_drop(saconn *c)
{
    sock_args_free(c->e);
    sock_free(c->s);
    free(c->buf);
    free(c);
}

/* c's args has just completed an operation (now or through its callback): start the next
 * ones until one goes pending. */
static void sa_advance(saconn *c)
{
    for (;;) {
        int32_t err = sock_args_socket_error(c->e);
        if (err != SOCK_SOCKET_ERROR_SUCCESS) {
            if (!atomic_load(&finishing))
                DIE("sa server: operation (state %d) failed: socket error %d", c->state,
                    (int)err);
            sa_drop(c);
            return;
        }
        bool (*op)(sock *, sock_args *);
        switch (c->state) {
        case SA_RECV0: /* data is readable (or end of stream) */
            c->buf = xmalloc(BUF);
            if (!sock_args_set_buffer(c->e, c->buf, BUF))
                DIE_SOCK("sock_args_set_buffer");
            c->state = SA_RECV;
            op = sock_receive_async;
            break;
        case SA_RECV: {
            size_t n = sock_args_bytes_transferred(c->e);
            if (n == 0) { /* end of stream */
                sa_drop(c);
                return;
            }
            if (!sock_args_set_range(c->e, 0, n))
                DIE_SOCK("sock_args_set_range");
            c->state = SA_SEND;
            op = sock_send_async;
            atomic_fetch_add_explicit(&server_sends, 1, memory_order_relaxed);
            break;
        }
        default: /* SA_SEND */
            if (sock_args_bytes_transferred(c->e) != sock_args_count(c->e))
                DIE("sa server: send completed with %zu of %zu bytes",
                    sock_args_bytes_transferred(c->e), sock_args_count(c->e));
            if (!sock_args_set_buffer(c->e, NULL, 0))
                DIE_SOCK("sock_args_set_buffer NULL");
            free(c->buf);
            c->buf = NULL;
            c->state = SA_RECV0;
            op = sock_receive_async;
            break;
        }
        if (op(c->s, c->e)) {
            if (op == sock_send_async)
                atomic_fetch_add_explicit(&server_waits, 1, memory_order_relaxed);
            return;
        }
        if (sock_last_status() != SOCK_STATUS_OK) {
            if (atomic_load(&finishing)) {
                sa_drop(c);
                return;
            }
            DIE_SOCK(op == sock_send_async ? "sock_send_async" : "sock_receive_async");
        }
    }
}

static void sa_on_io(sock *s, sock_args *e, void *token)
{
    (void)s;
    (void)e;
    sa_advance(token);
}

static void sa_accepted(void)
{
    if (sock_args_socket_error(sa_accept_args) != SOCK_SOCKET_ERROR_SUCCESS)
        DIE("sa server: accept failed: socket error %d",
            (int)sock_args_socket_error(sa_accept_args));
    saconn *c = calloc(1, sizeof *c);
    if (!c)
        DIE("out of memory");
    c->s = sock_args_accept_socket(sa_accept_args);
    if (!c->s)
        DIE("sa server: accept completed without a socket");
    c->e = sock_args_new(sa_on_io, c);
    if (!c->e)
        DIE_SOCK("sock_args_new");
    if (sa_batch_sends && !sock_set_option(c->s, SOCK_OPTION_BATCH_SENDS, 1))
        DIE_SOCK("sock_set_option BatchSends");
    c->state = SA_RECV0; /* zero-byte receive: wait for data without a buffer */
    if (!sock_receive_async(c->s, c->e)) {
        if (sock_last_status() != SOCK_STATUS_OK)
            DIE_SOCK("sock_receive_async (zero-byte)");
        sa_advance(c);
    }
    atomic_fetch_add(&accepted, 1);
}

/* Accepts until one goes pending. */
static void sa_accept_loop(void)
{
    for (;;) {
        if (sock_accept_async(sa_listener, sa_accept_args))
            return;
        if (sock_last_status() != SOCK_STATUS_OK)
            DIE_SOCK("sock_accept_async");
        sa_accepted();
    }
}

static void sa_on_accept(sock *s, sock_args *e, void *token)
{
    (void)s;
    (void)e;
    (void)token;
    sa_accepted();
    sa_accept_loop();
}

/* Before the library's first use: how many reactor threads it runs, callbacks inline. */
static void sa_configure(uint32_t reactor_threads)
{
    if (!sock_runtime_configure(reactor_threads, SOCK_DISPATCH_INLINE))
        DIE_SOCK("sock_runtime_configure");
}

static int start_sa(void)
{
    sa_listener = sock_create(SOCK_ADDRESS_FAMILY_INTER_NETWORK, SOCK_SOCKET_TYPE_STREAM,
                              SOCK_PROTOCOL_TYPE_TCP);
    if (!sa_listener)
        DIE_SOCK("sock_create");
    if (!sock_set_option(sa_listener, SOCK_OPTION_SEND_BUFFER_SIZE, SERVER_SNDBUF))
        DIE_SOCK("sock_set_option SendBufferSize");
    if (!sock_bind(sa_listener, "127.0.0.1:0"))
        DIE_SOCK("sock_bind");
    if (!sock_listen(sa_listener, backlog()))
        DIE_SOCK("sock_listen");
    char ep[64];
    if (sock_local_endpoint(sa_listener, ep, sizeof ep) == 0)
        DIE_SOCK("sock_local_endpoint");
    char *colon = strrchr(ep, ':');
    const char *batch = getenv("BENCH_BATCH_SENDS");
    sa_batch_sends = batch && strcmp(batch, "1") == 0;
    sa_accept_args = sock_args_new(sa_on_accept, NULL);
    if (!sa_accept_args)
        DIE_SOCK("sock_args_new");
    sa_accept_loop();
    return atoi(colon + 1);
}

/* ==== main =============================================================================== */

int main(int argc, char **argv)
{
    bench_init("bench_fanout");
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: %s\n", USAGE);
        return 2;
    }
    const char *m = argv[1];
    if (strcmp(m, "epoll") != 0 && strcmp(m, "uv") != 0 && strcmp(m, "sa") != 0) {
        fprintf(stderr, "usage: %s\n", USAGE);
        return 2;
    }
    nconn = parse_count(argv[2], USAGE);
    double seconds = (double)parse_count(argv[3], USAGE);
    uint64_t reactor_threads = argc == 5 ? parse_count(argv[4], USAGE) : 1;
    if (reactor_threads == 0 || reactor_threads > MAX_THREADS) {
        fprintf(stderr, "usage: %s (THREADS: 1-64)\n", USAGE);
        return 2;
    }
    raise_nofile();

    /* Fork the client before any thread exists. */
    int to_client[2], from_client[2];
    if (pipe2(to_client, O_CLOEXEC) != 0 || pipe2(from_client, O_CLOEXEC) != 0)
        DIE_ERRNO("pipe");
    pid_t pid = fork();
    if (pid < 0)
        DIE_ERRNO("fork");
    if (pid == 0) {
        close(to_client[1]);
        close(from_client[0]);
        client_main(to_client[0], from_client[1], seconds);
    }
    close(to_client[0]);
    close(from_client[1]);

    int port = strcmp(m, "epoll") == 0 ? start_epoll((unsigned)reactor_threads)
               : strcmp(m, "uv") == 0  ? start_uv((unsigned)reactor_threads)
                                       : (sa_configure((uint32_t)reactor_threads), start_sa());
    usleep(100000);
    long before = proc_status("VmRSS:");
    write_all(to_client[1], &port, sizeof port);

    char c;
    if (!read_all(from_client[0], &c, 1))
        DIE("the client failed while connecting");
    uint64_t t0 = now_ns();
    while (atomic_load(&accepted) < nconn) {
        if (now_ns() - t0 > 30000000000ull)
            DIE("the server accepted %" PRIu64 " of %" PRIu64 " connections in 30 s",
                (uint64_t)atomic_load(&accepted), nconn);
        usleep(1000);
    }
    usleep(200000); /* let every connection settle into waiting for data */
    long after = proc_status("VmRSS:");
    long threads = proc_status("Threads:");
    double per_conn = (double)(after - before) * 1024.0 / (double)nconn;

    write_all(to_client[1], &c, 1); /* go */
    client_result r;
    bool got = read_all(from_client[0], &r, sizeof r);
    atomic_store(&finishing, true);
    int status;
    if (waitpid(pid, &status, 0) != pid)
        DIE_ERRNO("waitpid");
    if (!got || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        DIE("the client failed (see above)");
    if (r.echoes == 0)
        DIE("no echo completed");
    double rate = (double)r.echoes / ((double)r.elapsed_ns / 1e9);
    uint64_t sends = atomic_load(&server_sends), pending = atomic_load(&server_waits);
    double tick_ns = 1e9 / (double)sysconf(_SC_CLK_TCK);
    double server_cpu_ns = (double)r.server_cpu_ticks * tick_ns;
    fprintf(stderr,
            "stats: connections=%" PRIu64 " echoes=%" PRIu64 " elapsed_ns=%" PRIu64
            " sends=%" PRIu64 " pending=%" PRIu64 " pending_pct=%.1f rss_before_kb=%ld"
            " rss_after_kb=%ld rss_per_conn=%.0f reactor_threads=%" PRIu64 " threads=%ld"
            " server_cpu_pct=%.0f client_cpu_pct=%.0f server_cpu_us_per_echo=%.1f\n",
            nconn, r.echoes, r.elapsed_ns, sends, pending,
            sends ? 100.0 * (double)pending / (double)sends : 0.0, before, after, per_conn,
            reactor_threads, threads, 100.0 * server_cpu_ns / (double)r.elapsed_ns,
            100.0 * (double)r.client_cpu_ticks * tick_ns / (double)r.elapsed_ns,
            server_cpu_ns / 1e3 / (double)r.echoes);
    printf("%.0f %.0f\n", rate, per_conn < 0 ? 0.0 : per_conn);
    fflush(stdout);
    _exit(0);
}

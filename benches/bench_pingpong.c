/*
 * bench_pingpong: request/response latency. A client sends a 64-byte request and waits for
 * the 64-byte response; an echo server sends every byte back. TCP_NODELAY on both ends,
 * loopback TCP, both ends in this one process (the server on its own thread), no pinning.
 *
 *   bench_pingpong raw|uv|sa|sa-wait ROUND_TRIPS [WARMUP]      (WARMUP defaults to 1000)
 *
 * Prints "P50 P99" (microseconds per round trip, over ROUND_TRIPS after WARMUP untimed
 * ones) on stdout and a "stats:" line on stderr. Each request carries its sequence number
 * and a pattern derived from it; each response must equal its request byte for byte, or the
 * program exits non-zero.
 *
 *   raw  blocking send(2)/recv(2) on both ends; the server is a thread.
 *   uv   both ends on libuv, each with its own loop on its own thread: the server echoes
 *        from its uv_read_start callback with uv_write; the client uv_writes the request
 *        and collects the response in its read callback, then writes the next one.
 *   sa   both ends on sockasync and both driven from callbacks, each end on its own
 *        reactor thread (2 reactor threads, Inline dispatch): the server keeps a receive
 *        pending whose callback (on the reactor thread) sends the bytes back and then
 *        receives again (synchronous completions handled inline, as in
 *        examples-c/echo_server.c); the client's receive callback checks the response and
 *        sends the next request, then receives again. The way libuv's and tokio's clients
 *        run here (in their own loop's callbacks or tasks).
 *   sa-wait  the server as in sa, one reactor thread; the client is an application thread
 *        that issues sock_send_async then sock_receive_async, waiting on a semaphore
 *        whenever one goes pending: every round trip also crosses the hand-off from the
 *        reactor thread (which completes the client's receive) to the waiting client thread.
 *
 * Why it is fair: in raw, uv and sa (and tokio's benches/tokio) each round trip crosses the
 * same two thread hand-offs, client end -> server end -> client end, each end on its own
 * thread (raw: two threads blocking in recv; uv, sa, tokio: each end's event loop on its
 * own thread), with the same message, options and checks. sa-wait adds a third (the
 * reactor thread to the waiting client thread). The timer is the same clock_gettime around
 * the request's send and the response's arrival.
 */
#include "bench_common.h"

#include <sys/resource.h>
#include <uv.h>

#define USAGE "bench_pingpong raw|uv|sa|sa-wait ROUND_TRIPS [WARMUP]"

enum { MSG = 64, SERVER_BUFFER = 64 * 1024 };

static uint64_t warmup, rounds, total_rounds;
static uint64_t *latency_ns; /* one per timed round trip */

static void fill_request(unsigned char *req, uint64_t seq)
{
    memcpy(req, &seq, sizeof seq);
    for (size_t i = sizeof seq; i < MSG; i++)
        req[i] = (unsigned char)(seq * 31u + i);
}

/* Records round trip `seq` after checking its response. */
static void record(uint64_t seq, const unsigned char *req, const unsigned char *resp,
                   uint64_t t0, uint64_t t1)
{
    if (memcmp(req, resp, MSG) != 0)
        DIE("the response to request %" PRIu64 " differs from the request", seq);
    if (seq >= warmup)
        latency_ns[seq - warmup] = t1 - t0;
}

/* ---- raw: blocking send/recv, server thread ----------------------------------------------- */

static bool send_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static void *raw_server(void *arg)
{
    int lfd = *(int *)arg;
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        DIE_ERRNO("accept");
    set_nodelay(fd);
    unsigned char *buf = xmalloc(SERVER_BUFFER);
    for (;;) {
        ssize_t n = recv(fd, buf, SERVER_BUFFER, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            DIE_ERRNO("server recv");
        if (n == 0)
            break;
        if (!send_all(fd, buf, (size_t)n))
            DIE_ERRNO("server send");
    }
    free(buf);
    close(fd);
    return NULL;
}

static void run_raw(void)
{
    int port;
    int lfd = raw_listener(&port);
    pthread_t server;
    if (pthread_create(&server, NULL, raw_server, &lfd) != 0)
        DIE("pthread_create failed");
    int fd = raw_connect(port);
    set_nodelay(fd);
    unsigned char req[MSG], resp[MSG];
    for (uint64_t seq = 0; seq < total_rounds; seq++) {
        fill_request(req, seq);
        uint64_t t0 = now_ns();
        if (!send_all(fd, req, MSG))
            DIE_ERRNO("client send");
        for (size_t got = 0; got < MSG;) {
            ssize_t n = recv(fd, resp + got, MSG - got, 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                DIE("client recv: %s", n == 0 ? "end of stream" : strerror(errno));
            got += (size_t)n;
        }
        record(seq, req, resp, t0, now_ns());
    }
    close(fd);
    pthread_join(server, NULL);
    close(lfd);
}

/* ---- libuv: both ends on libuv, each with its own loop and thread ------------------------- */

typedef struct {
    uv_loop_t loop;
    uv_tcp_t listener, conn;
    int port;
    sem_t listening;
    unsigned char in[SERVER_BUFFER];
    unsigned char out[SERVER_BUFFER]; /* the echo being written (one at a time) */
    uv_write_t req;
    bool writing;
} uv_server;

typedef struct {
    uv_write_t req;
    unsigned char data[];
} uv_spare_write; /* only if a second echo starts before the first one's callback */

static void uv_srv_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    uv_server *srv = h->data;
    *buf = uv_buf_init((char *)srv->in, sizeof srv->in);
}

static void uv_srv_written(uv_write_t *req, int status)
{
    uv_server *srv = req->handle->data;
    if (status != 0)
        DIE("server uv_write: %s", uv_strerror(status));
    if (req == &srv->req)
        srv->writing = false;
    else
        free(req); /* a spare */
}

static void uv_srv_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    uv_server *srv = stream->data;
    if (nread == UV_EOF) {
        uv_close((uv_handle_t *)&srv->conn, NULL);
        uv_close((uv_handle_t *)&srv->listener, NULL);
        return;
    }
    if (nread < 0)
        DIE("server read: %s", uv_strerror((int)nread));
    if (nread == 0)
        return;
    uv_write_t *req = &srv->req;
    unsigned char *data = srv->out;
    if (srv->writing) {
        uv_spare_write *spare = xmalloc(sizeof *spare + (size_t)nread);
        req = &spare->req;
        data = spare->data;
    } else {
        srv->writing = true;
    }
    memcpy(data, srv->in, (size_t)nread);
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)nread);
    int rc = uv_write(req, stream, &b, 1, uv_srv_written);
    if (rc != 0)
        DIE("server uv_write: %s", uv_strerror(rc));
}

static void uv_srv_connection(uv_stream_t *listener, int status)
{
    uv_server *srv = listener->data;
    if (status != 0)
        DIE("server listen: %s", uv_strerror(status));
    if (uv_tcp_init(&srv->loop, &srv->conn) != 0 ||
        uv_accept(listener, (uv_stream_t *)&srv->conn) != 0)
        DIE("server uv_accept failed");
    srv->conn.data = srv;
    if (uv_tcp_nodelay(&srv->conn, 1) != 0 ||
        uv_read_start((uv_stream_t *)&srv->conn, uv_srv_alloc, uv_srv_read) != 0)
        DIE("server uv_tcp_nodelay/uv_read_start failed");
}

static void *uv_server_main(void *arg)
{
    uv_server *srv = arg;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    int namelen = sizeof a;
    if (uv_loop_init(&srv->loop) != 0 || uv_tcp_init(&srv->loop, &srv->listener) != 0 ||
        uv_tcp_bind(&srv->listener, (const struct sockaddr *)&a, 0) != 0 ||
        uv_listen((uv_stream_t *)&srv->listener, 16, uv_srv_connection) != 0 ||
        uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&a, &namelen) != 0)
        DIE("server: libuv listen on 127.0.0.1 failed");
    srv->listener.data = srv;
    srv->port = ntohs(a.sin_port);
    sem_post(&srv->listening);
    uv_run(&srv->loop, UV_RUN_DEFAULT); /* until the client's end of stream closes both */
    if (uv_loop_close(&srv->loop) != 0)
        DIE("server uv_loop_close: handles left open");
    return NULL;
}

typedef struct {
    uv_loop_t loop;
    uv_tcp_t tcp;
    uv_write_t req;
    unsigned char request[MSG], response[MSG];
    size_t got;
    uint64_t seq, t0;
    bool connected, writing, answered; /* answered: the response is in, the write not done */
} uv_client;

static void uv_cli_written(uv_write_t *req, int status);

static void uv_cli_send(uv_client *c)
{
    fill_request(c->request, c->seq);
    c->got = 0;
    c->writing = true;
    c->answered = false;
    c->t0 = now_ns();
    uv_buf_t b = uv_buf_init((char *)c->request, MSG);
    int rc = uv_write(&c->req, (uv_stream_t *)&c->tcp, &b, 1, uv_cli_written);
    if (rc != 0)
        DIE("client uv_write: %s", uv_strerror(rc));
}

/* The round trip is over once the response is in and the write request is free again. */
static void uv_cli_next(uv_client *c)
{
    if (++c->seq < total_rounds)
        uv_cli_send(c);
    else
        uv_close((uv_handle_t *)&c->tcp, NULL); /* the server reads end of stream */
}

static void uv_cli_written(uv_write_t *req, int status)
{
    uv_client *c = req->data;
    if (status != 0)
        DIE("client uv_write: %s", uv_strerror(status));
    c->writing = false;
    if (c->answered)
        uv_cli_next(c);
}

static void uv_cli_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    (void)h;
    /* Room for one byte more than the response, so a stray extra byte is caught. */
    static unsigned char spill[MSG + 1];
    *buf = uv_buf_init((char *)spill, sizeof spill);
}

static void uv_cli_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    uv_client *c = stream->data;
    if (nread < 0)
        DIE("client read: %s", uv_strerror((int)nread));
    if (nread == 0)
        return;
    if (c->got + (size_t)nread > MSG)
        DIE("the server sent more than the %d-byte response", MSG);
    memcpy(c->response + c->got, buf->base, (size_t)nread);
    c->got += (size_t)nread;
    if (c->got < MSG)
        return;
    record(c->seq, c->request, c->response, c->t0, now_ns());
    c->answered = true;
    if (!c->writing)
        uv_cli_next(c);
}

static void uv_cli_connected(uv_connect_t *req, int status)
{
    if (status != 0)
        DIE("client uv_tcp_connect: %s", uv_strerror(status));
    ((uv_client *)req->data)->connected = true;
}

static void run_uv(void)
{
    uv_server *srv = calloc(1, sizeof *srv);
    uv_client *c = calloc(1, sizeof *c);
    if (!srv || !c)
        DIE("out of memory");
    sem_init(&srv->listening, 0, 0);
    pthread_t server;
    if (pthread_create(&server, NULL, uv_server_main, srv) != 0)
        DIE("pthread_create failed");
    sem_wait_all(&srv->listening);

    if (uv_loop_init(&c->loop) != 0 || uv_tcp_init(&c->loop, &c->tcp) != 0)
        DIE("client uv_loop_init/uv_tcp_init failed");
    c->tcp.data = c;
    c->req.data = c;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", srv->port, &a);
    uv_connect_t creq;
    creq.data = c;
    if (uv_tcp_connect(&creq, &c->tcp, (const struct sockaddr *)&a, uv_cli_connected) != 0)
        DIE("client uv_tcp_connect failed");
    while (!c->connected)
        uv_run(&c->loop, UV_RUN_ONCE);
    if (uv_tcp_nodelay(&c->tcp, 1) != 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, uv_cli_alloc, uv_cli_read) != 0)
        DIE("client uv_tcp_nodelay/uv_read_start failed");
    uv_cli_send(c);
    uv_run(&c->loop, UV_RUN_DEFAULT); /* until the last round trip closed the handle */
    if (c->seq != total_rounds)
        DIE("libuv client stopped after %" PRIu64 " round trips", c->seq);
    if (uv_loop_close(&c->loop) != 0)
        DIE("client uv_loop_close: handles left open");
    pthread_join(server, NULL);
    sem_destroy(&srv->listening);
    free(srv);
    free(c);
}

/* ---- sockasync: both ends on sockasync ----------------------------------------------------- */

typedef struct {
    sock *s;
    sock_args *e;
    bool sending; /* the operation on e is a send (of `echo` bytes), else a receive */
    size_t echo;
    sem_t ended; /* posted when the client's end of stream arrives */
    unsigned char buf[SERVER_BUFFER];
} sa_server;

/* Handles one completed server operation; false once the connection is over. */
static bool sa_srv_process(sa_server *srv)
{
    if (sock_args_socket_error(srv->e) != SOCK_SOCKET_ERROR_SUCCESS)
        DIE("server %s failed: socket error %d", srv->sending ? "send" : "receive",
            (int)sock_args_socket_error(srv->e));
    size_t n = sock_args_bytes_transferred(srv->e);
    if (srv->sending) {
        srv->sending = false;
        return true;
    }
    if (n == 0) /* end of stream: the client is done */
        return false;
    srv->sending = true;
    srv->echo = n;
    return true;
}

/* Receives and echoes until an operation goes pending (its callback resumes) or the end. */
static void sa_srv_run(sa_server *srv)
{
    for (;;) {
        if (!sock_args_set_range(srv->e, 0, srv->sending ? srv->echo : sizeof srv->buf))
            DIE_SOCK("sock_args_set_range");
        bool pending = srv->sending ? sock_send_async(srv->s, srv->e)
                                    : sock_receive_async(srv->s, srv->e);
        if (pending)
            return;
        if (sock_last_status() != SOCK_STATUS_OK)
            DIE_SOCK(srv->sending ? "server sock_send_async" : "server sock_receive_async");
        if (!sa_srv_process(srv))
            break;
    }
    sem_post(&srv->ended);
}

static void sa_srv_completed(sock *s, sock_args *e, void *token)
{
    (void)s;
    (void)e;
    sa_server *srv = token;
    if (sa_srv_process(srv))
        sa_srv_run(srv);
    else
        sem_post(&srv->ended);
}

/* sa's client: every round trip runs in its callbacks. */
typedef struct {
    sock *s;
    sock_args *send, *recv;
    unsigned char req[MSG], resp[MSG];
    size_t got;
    uint64_t seq, t0, send_pending, recv_pending;
    sem_t done;
} sacb_client;

static void sacb_receive(sacb_client *c);

static void sacb_sent(sacb_client *c)
{
    if (sock_args_socket_error(c->send) != SOCK_SOCKET_ERROR_SUCCESS)
        DIE("client send failed: socket error %d", (int)sock_args_socket_error(c->send));
    c->got = 0;
    sacb_receive(c);
}

static void sacb_start_round(sacb_client *c)
{
    fill_request(c->req, c->seq);
    c->t0 = now_ns();
    if (sock_send_async(c->s, c->send)) {
        c->send_pending++;
        return; /* its callback goes on */
    }
    if (sock_last_status() != SOCK_STATUS_OK)
        DIE_SOCK("client sock_send_async");
    sacb_sent(c);
}

/* Handles a completed receive; true if the round trip needs more receiving. */
static bool sacb_received(sacb_client *c)
{
    if (sock_args_socket_error(c->recv) != SOCK_SOCKET_ERROR_SUCCESS)
        DIE("client receive failed: socket error %d", (int)sock_args_socket_error(c->recv));
    size_t n = sock_args_bytes_transferred(c->recv);
    if (n == 0)
        DIE("client receive: end of stream");
    c->got += n;
    if (c->got < MSG)
        return true;
    record(c->seq, c->req, c->resp, c->t0, now_ns());
    if (++c->seq == total_rounds)
        sem_post(&c->done);
    else
        sacb_start_round(c);
    return false;
}

static void sacb_receive(sacb_client *c)
{
    do {
        if (!sock_args_set_range(c->recv, c->got, MSG - c->got))
            DIE_SOCK("sock_args_set_range");
        if (sock_receive_async(c->s, c->recv)) {
            c->recv_pending++;
            return; /* its callback goes on */
        }
        if (sock_last_status() != SOCK_STATUS_OK)
            DIE_SOCK("client sock_receive_async");
    } while (sacb_received(c));
}

static void sacb_on_send(sock *s, sock_args *e, void *token)
{
    (void)s;
    (void)e;
    sacb_sent(token);
}

static void sacb_on_receive(sock *s, sock_args *e, void *token)
{
    (void)s;
    (void)e;
    sacb_client *c = token;
    if (sacb_received(c))
        sacb_receive(c);
}

static bool callbacks_client; /* sa (sa-wait: false) */

static void run_sa(void)
{
    if (callbacks_client && !sock_runtime_configure(2, SOCK_DISPATCH_INLINE))
        DIE_SOCK("sock_runtime_configure");

    sa_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        DIE("out of memory");
    sem_init(&srv->ended, 0, 0);

    /* The listener and the accept. */
    sock *listener = sock_create(SOCK_ADDRESS_FAMILY_INTER_NETWORK, SOCK_SOCKET_TYPE_STREAM,
                                 SOCK_PROTOCOL_TYPE_TCP);
    char ep[64];
    if (!listener || !sock_bind(listener, "127.0.0.1:0") || !sock_listen(listener, 16) ||
        sock_local_endpoint(listener, ep, sizeof ep) == 0)
        DIE_SOCK("server listen on 127.0.0.1");
    const char *colon = strrchr(ep, ':');
    int port = colon ? atoi(colon + 1) : 0;
    sem_t accepted;
    sem_init(&accepted, 0, 0);
    sock_args *accept_args = sock_args_new(sa_post, &accepted);
    if (!accept_args)
        DIE_SOCK("sock_args_new");
    bool accept_pending = sock_accept_async(listener, accept_args);
    if (!accept_pending && sock_last_status() != SOCK_STATUS_OK)
        DIE_SOCK("sock_accept_async");

    sock *client = sa_connect(port);
    if (accept_pending)
        sem_wait_all(&accepted);
    if (sock_args_socket_error(accept_args) != SOCK_SOCKET_ERROR_SUCCESS)
        DIE("accept failed: socket error %d", (int)sock_args_socket_error(accept_args));
    srv->s = sock_args_accept_socket(accept_args);
    if (!srv->s)
        DIE("accept produced no socket");
    sock_args_free(accept_args);
    sem_destroy(&accepted);
    sock_free(listener);

    if (!sock_set_option(srv->s, SOCK_OPTION_NO_DELAY, 1) ||
        !sock_set_option(client, SOCK_OPTION_NO_DELAY, 1))
        DIE_SOCK("sock_set_option NoDelay");

    /* The server: a receive pending from now on, echoing from its callback. */
    srv->e = sock_args_new(sa_srv_completed, srv);
    if (!srv->e || !sock_args_set_buffer(srv->e, srv->buf, sizeof srv->buf))
        DIE_SOCK("server sock_args_new/sock_args_set_buffer");
    sa_srv_run(srv);

    if (callbacks_client) {
        /* Sockets go to the reactors in turn: the listener and the accepted socket to the
         * first, the client to the second. */
        sacb_client *c = calloc(1, sizeof *c);
        if (!c)
            DIE("out of memory");
        c->s = client;
        sem_init(&c->done, 0, 0);
        c->send = sock_args_new(sacb_on_send, c);
        c->recv = sock_args_new(sacb_on_receive, c);
        if (!c->send || !c->recv || !sock_args_set_buffer(c->send, c->req, MSG) ||
            !sock_args_set_buffer(c->recv, c->resp, MSG))
            DIE_SOCK("client sock_args_new/sock_args_set_buffer");
        sacb_start_round(c);
        sem_wait_all(&c->done);
        fprintf(stderr, "stats: sockasync callback client: %" PRIu64 " sends and %" PRIu64
                        " receives went pending\n",
                c->send_pending, c->recv_pending);
        sock_free(client);
        sem_wait_all(&srv->ended);
        sock_free(srv->s);
        sock_args_free(srv->e);
        sock_args_free(c->send);
        sock_args_free(c->recv);
        sem_destroy(&c->done);
        sem_destroy(&srv->ended);
        free(c);
        free(srv);
        return;
    }

    /* The client: send the request, then receive until the whole response is in. */
    unsigned char req[MSG], resp[MSG];
    sem_t sent, received;
    sem_init(&sent, 0, 0);
    sem_init(&received, 0, 0);
    sock_args *send_args = sock_args_new(sa_post, &sent);
    sock_args *recv_args = sock_args_new(sa_post, &received);
    if (!send_args || !recv_args || !sock_args_set_buffer(send_args, req, MSG) ||
        !sock_args_set_buffer(recv_args, resp, MSG))
        DIE_SOCK("client sock_args_new/sock_args_set_buffer");
    uint64_t send_pending = 0, recv_pending = 0;
    for (uint64_t seq = 0; seq < total_rounds; seq++) {
        fill_request(req, seq);
        uint64_t t0 = now_ns();
        if (sock_send_async(client, send_args)) {
            send_pending++;
            sem_wait_all(&sent);
        } else if (sock_last_status() != SOCK_STATUS_OK) {
            DIE_SOCK("client sock_send_async");
        }
        if (sock_args_socket_error(send_args) != SOCK_SOCKET_ERROR_SUCCESS)
            DIE("client send failed: socket error %d", (int)sock_args_socket_error(send_args));
        for (size_t got = 0; got < MSG;) {
            if (!sock_args_set_range(recv_args, got, MSG - got))
                DIE_SOCK("sock_args_set_range");
            if (sock_receive_async(client, recv_args)) {
                recv_pending++;
                sem_wait_all(&received);
            } else if (sock_last_status() != SOCK_STATUS_OK) {
                DIE_SOCK("client sock_receive_async");
            }
            if (sock_args_socket_error(recv_args) != SOCK_SOCKET_ERROR_SUCCESS)
                DIE("client receive failed: socket error %d",
                    (int)sock_args_socket_error(recv_args));
            size_t n = sock_args_bytes_transferred(recv_args);
            if (n == 0)
                DIE("client receive: end of stream");
            got += n;
        }
        record(seq, req, resp, t0, now_ns());
    }
    fprintf(stderr, "stats: sockasync client: %" PRIu64 " sends and %" PRIu64
                    " receives went pending\n",
            send_pending, recv_pending);

    sock_free(client); /* graceful: the server's pending receive completes with 0 bytes */
    sem_wait_all(&srv->ended);
    sock_free(srv->s);
    sock_args_free(srv->e);
    sock_args_free(send_args);
    sock_args_free(recv_args);
    sem_destroy(&sent);
    sem_destroy(&received);
    sem_destroy(&srv->ended);
    free(srv);
}

static int compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    bench_init("bench_pingpong");
    if (argc != 3 && argc != 4)
        parse_mech(NULL, USAGE);
    bool waiting_client = strcmp(argv[1], "sa-wait") == 0;
    enum mech mech = waiting_client ? MECH_SA : parse_mech(argv[1], USAGE);
    callbacks_client = mech == MECH_SA && !waiting_client;
    rounds = parse_count(argv[2], USAGE);
    warmup = argc == 4 ? strtoull(argv[3], NULL, 10) : 1000;
    total_rounds = warmup + rounds;
    latency_ns = xmalloc(rounds * sizeof *latency_ns);

    if (mech == MECH_RAW)
        run_raw();
    else if (mech == MECH_UV)
        run_uv();
    else
        run_sa();

    qsort(latency_ns, rounds, sizeof *latency_ns, compare_u64);
    double p50 = (double)latency_ns[rounds / 2] / 1e3;
    double p99 = (double)latency_ns[rounds * 99 / 100] / 1e3;
    printf("%.2f %.2f\n", p50, p99);
    /* What the process spent (both ends, every thread), per round trip: a busy poll buys
     * its latency with CPU, and this shows how much. */
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu_us = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
                    (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
    fprintf(stderr, "stats: mech=%s round_trips=%" PRIu64 " warmup=%" PRIu64
                    " min_us=%.2f max_us=%.2f cpu_us_per_round_trip=%.2f\n",
            argv[1], rounds, warmup, (double)latency_ns[0] / 1e3,
            (double)latency_ns[rounds - 1] / 1e3, cpu_us / (double)total_rounds);
    free(latency_ns);
    return 0;
}

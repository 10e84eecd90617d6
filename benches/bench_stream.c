/*
 * bench_stream: bulk throughput. TOTAL bytes in 64 KiB sends over loopback TCP to a reader
 * thread that drains with blocking recv (64 KiB buffer).
 *
 *   bench_stream raw|uv|sa TOTAL_BYTES        (TOTAL a multiple of 65536)
 *
 * Prints GB/s (10^9 bytes per second) on stdout, measured from the first send to the moment
 * the reader has received the last byte (end to end, so bytes parked in socket buffers do
 * not count as done), and a "stats:" line on stderr.
 *
 *   raw  a plain blocking socket: send(2) with MSG_NOSIGNAL in a loop (a partial send is
 *        finished before the next).
 *   uv   uv_write of one 64 KiB buffer; its write callback issues the next uv_write; the
 *        main thread runs the loop (the idiomatic libuv writer).
 *   sa   sock_send_async with one args object: the caller's thread sends while sends
 *        complete synchronously; when one goes pending, its completion callback (on the
 *        reactor thread) checks it and issues the next sends, the same way, until the end.
 *
 * Why it is fair: same reader, same buffer (the same memory every send), same 64 KiB send
 * size and total, no socket options changed, and each mechanism checks every send's
 * result. The reader checks a sample of the bytes (every 4 KiB of the stream and the last
 * byte of each recv; a full compare would load the reader, the bottleneck here) against
 * the pattern, and that the total is exact.
 */
#include "bench_common.h"

#include <uv.h>

#define USAGE "bench_stream raw|uv|sa TOTAL_BYTES (a multiple of 65536)"

enum { CHUNK = 64 * 1024 };

static unsigned char *chunk;
static uint64_t chunks_total, calls, pending;

/* ---- raw blocking send(2) -------------------------------------------------------------- */

static uint64_t run_raw(int port)
{
    int fd = raw_connect(port);
    uint64_t start = now_ns();
    for (uint64_t i = 0; i < chunks_total; i++) {
        size_t off = 0;
        while (off < CHUNK) {
            calls++;
            ssize_t n = send(fd, chunk + off, CHUNK - off, MSG_NOSIGNAL);
            if (n > 0)
                off += (size_t)n;
            else if (n < 0 && errno != EINTR)
                DIE_ERRNO("send");
        }
    }
    close(fd);
    return start;
}

/* ---- libuv uv_write chain ---------------------------------------------------------------- */

typedef struct {
    uv_tcp_t tcp;
    uv_write_t req;
    uint64_t written;
    bool connected;
} uv_writer;

static void uv_on_write(uv_write_t *req, int status);

static void uv_write_next(uv_writer *w)
{
    calls++;
    uv_buf_t b = uv_buf_init((char *)chunk, CHUNK);
    int rc = uv_write(&w->req, (uv_stream_t *)&w->tcp, &b, 1, uv_on_write);
    if (rc != 0)
        DIE("uv_write: %s", uv_strerror(rc));
}

static void uv_on_write(uv_write_t *req, int status)
{
    uv_writer *w = req->data;
    if (status != 0)
        DIE("uv_write completed with %s", uv_strerror(status));
    if (++w->written < chunks_total)
        uv_write_next(w);
    else
        uv_close((uv_handle_t *)&w->tcp, NULL);
}

static void uv_on_connect(uv_connect_t *req, int status)
{
    if (status != 0)
        DIE("uv_tcp_connect: %s", uv_strerror(status));
    ((uv_writer *)req->data)->connected = true;
}

static uint64_t run_uv(int port)
{
    uv_loop_t loop;
    uv_writer w = {0};
    if (uv_loop_init(&loop) != 0 || uv_tcp_init(&loop, &w.tcp) != 0)
        DIE("uv_loop_init/uv_tcp_init failed");
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", port, &a);
    uv_connect_t creq;
    creq.data = &w;
    int rc = uv_tcp_connect(&creq, &w.tcp, (const struct sockaddr *)&a, uv_on_connect);
    if (rc != 0)
        DIE("uv_tcp_connect: %s", uv_strerror(rc));
    while (!w.connected)
        uv_run(&loop, UV_RUN_ONCE);
    w.req.data = &w;
    uint64_t start = now_ns();
    uv_write_next(&w);
    uv_run(&loop, UV_RUN_DEFAULT); /* returns once the last write closed the handle */
    if (w.written != chunks_total)
        DIE("libuv wrote %" PRIu64 " of %" PRIu64 " chunks", w.written, chunks_total);
    if (uv_loop_close(&loop) != 0)
        DIE("uv_loop_close: handles left open");
    return start;
}

/* ---- sockasync send chain ---------------------------------------------------------------- */

typedef struct {
    sock *s;
    sock_args *e;
    uint64_t sent; /* touched only by whoever owns the one send in flight */
    sem_t finished;
} sa_writer;

/* Issues sends until one goes pending (its callback resumes) or all are sent. */
static void sa_run(sa_writer *w)
{
    while (w->sent < chunks_total) {
        calls++;
        if (sock_send_async(w->s, w->e)) {
            pending++;
            return; /* sa_on_sent continues on the reactor thread */
        }
        if (sock_last_status() != SOCK_STATUS_OK)
            DIE_SOCK("sock_send_async");
        if (sock_args_socket_error(w->e) != SOCK_SOCKET_ERROR_SUCCESS)
            DIE("send failed: socket error %d", (int)sock_args_socket_error(w->e));
        w->sent++;
    }
    sem_post(&w->finished);
}

static void sa_on_sent(sock *s, sock_args *e, void *token)
{
    (void)s;
    sa_writer *w = token;
    if (sock_args_socket_error(e) != SOCK_SOCKET_ERROR_SUCCESS)
        DIE("send failed: socket error %d", (int)sock_args_socket_error(e));
    if (sock_args_bytes_transferred(e) != CHUNK)
        DIE("a pending send completed with %zu bytes", sock_args_bytes_transferred(e));
    w->sent++;
    sa_run(w);
}

static uint64_t run_sa(int port)
{
    sa_writer w = {.s = sa_connect(port)};
    sem_init(&w.finished, 0, 0);
    w.e = sock_args_new(sa_on_sent, &w);
    if (!w.e || !sock_args_set_buffer(w.e, chunk, CHUNK))
        DIE_SOCK("sock_args_new/sock_args_set_buffer");
    uint64_t start = now_ns();
    sa_run(&w);
    sem_wait_all(&w.finished);
    sock_free(w.s); /* nothing pending: graceful close, the reader sees end of stream */
    sock_args_free(w.e);
    sem_destroy(&w.finished);
    return start;
}

int main(int argc, char **argv)
{
    bench_init("bench_stream");
    if (argc != 3)
        parse_mech(NULL, USAGE);
    enum mech mech = parse_mech(argv[1], USAGE);
    uint64_t total = parse_count(argv[2], USAGE);
    if (total % CHUNK != 0)
        parse_mech(NULL, USAGE);
    chunks_total = total / CHUNK;
    chunk = xmalloc(CHUNK);
    fill_pattern(chunk, CHUNK);

    reader r;
    int port;
    reader_start(&r, total, CHUNK, false, &port);
    uint64_t start = mech == MECH_RAW  ? run_raw(port)
                     : mech == MECH_UV ? run_uv(port)
                                       : run_sa(port);
    reader_finish(&r);
    free(chunk);

    double seconds = (double)(r.done_ns - start) / 1e9;
    printf("%.3f\n", (double)total / seconds / 1e9);
    fprintf(stderr, "stats: mech=%s bytes=%" PRIu64 " calls=%" PRIu64 " pending=%" PRIu64
                    " seconds=%.3f\n",
            argv[1], total, calls, pending, seconds);
    return 0;
}

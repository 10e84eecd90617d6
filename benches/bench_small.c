/*
 * bench_small: the cost of one small send. N x 64-byte sends over loopback TCP to a reader
 * thread that drains continuously (blocking recv, 64 KiB buffer), no TCP_NODELAY.
 *
 *   bench_small raw|uv|sa|sa-batch N
 *
 * Prints the nanoseconds per send (the send loop's wall time / N) on stdout, and one
 * "stats:" line on stderr: how many times the mechanism's send function was called, how
 * many sends went pending (sockasync) or hit EAGAIN (raw, libuv), and the reader's total.
 *
 *   raw  a non-blocking socket and send(2) with MSG_NOSIGNAL; on EAGAIN, poll(2) for
 *        POLLOUT and retry. The send call sits in raw_send_call, a function that is never
 *        inlined, so callgrind can toggle on it as it does on the libraries' functions.
 *   uv   uv_try_write on a connected uv_tcp_t; on UV_EAGAIN, poll(2) the handle's
 *        descriptor for POLLOUT and retry (the loop is not needed to try a write).
 *   sa   sock_send_async with one args object reused for every send; a send that returns
 *        true (pending) is waited for (its callback posts a semaphore) before the next;
 *        one that returns false must have status OK and socket error Success.
 *   sa-batch  the batched path: the io_uring backend and SOCK_OPTION_BATCH_SENDS, 256 args
 *        objects in turn (a send always goes pending; an args object is reused once its
 *        callback has run, which the loop waits for on a semaphore when it catches up).
 *        The reactor gathers what queued while its last batch was in the kernel into one
 *        sendmsg; the timed loop ends when the last callback has run.
 *
 * Why it is fair: the same reader, buffer, connection setup (each mechanism connects its
 * own way to the same kind of listener; connecting is not timed), the same 1% untimed
 * warm-up, and each mechanism does what a real caller must do to know each send succeeded.
 * The reader checks every byte against the pattern and that the total is exactly N x 64;
 * the program exits non-zero on any mismatch or error.
 *
 * For callgrind (benches/run.sh): valgrind --tool=callgrind --toggle-collect=raw_send_call
 * (or uv_try_write, or sock_send_async); Ir per call = collected Ir / calls.
 */
#include "bench_common.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <uv.h>

#define USAGE "bench_small raw|uv|sa|sa-batch N"

enum { MSG = 64 };

static unsigned char message[MSG];
static uint64_t calls, waits; /* send-function calls; EAGAIN or pending count */

/* ---- raw send(2) --------------------------------------------------------------------------- */

/* The one place the raw loop calls send(2): noipa keeps it a real, uncloned function. */
__attribute__((noinline, noipa)) ssize_t raw_send_call(int fd, const void *buf, size_t len)
{
    return send(fd, buf, len, MSG_NOSIGNAL);
}

static void raw_send_all(int fd)
{
    size_t off = 0;
    while (off < MSG) {
        calls++;
        ssize_t n = raw_send_call(fd, message + off, MSG - off);
        if (n >= 0) {
            off += (size_t)n;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            waits++;
            wait_writable(fd);
        } else if (errno != EINTR) {
            DIE_ERRNO("send");
        }
    }
}

static uint64_t run_raw(int port, uint64_t warmup, uint64_t n)
{
    int fd = raw_connect(port);
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0)
        DIE_ERRNO("fcntl O_NONBLOCK");
    for (uint64_t i = 0; i < warmup; i++)
        raw_send_all(fd);
    uint64_t start = now_ns();
    for (uint64_t i = 0; i < n; i++)
        raw_send_all(fd);
    uint64_t elapsed = now_ns() - start;
    close(fd);
    return elapsed;
}

/* ---- libuv uv_try_write ------------------------------------------------------------------ */

static void uv_on_connect(uv_connect_t *req, int status)
{
    if (status != 0)
        DIE("uv_tcp_connect: %s", uv_strerror(status));
    *(bool *)req->data = true;
}

static void uv_connect_loopback(uv_loop_t *loop, uv_tcp_t *tcp, int port)
{
    if (uv_tcp_init(loop, tcp) != 0)
        DIE("uv_tcp_init failed");
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", port, &a);
    uv_connect_t req;
    bool connected = false;
    req.data = &connected;
    int rc = uv_tcp_connect(&req, tcp, (const struct sockaddr *)&a, uv_on_connect);
    if (rc != 0)
        DIE("uv_tcp_connect: %s", uv_strerror(rc));
    while (!connected)
        uv_run(loop, UV_RUN_ONCE);
}

static void uv_send_all(uv_stream_t *stream, int fd)
{
    size_t off = 0;
    while (off < MSG) {
        calls++;
        uv_buf_t b = uv_buf_init((char *)message + off, (unsigned)(MSG - off));
        int n = uv_try_write(stream, &b, 1);
        if (n >= 0) {
            off += (size_t)n;
        } else if (n == UV_EAGAIN) {
            waits++;
            wait_writable(fd);
        } else {
            DIE("uv_try_write: %s", uv_strerror(n));
        }
    }
}

static uint64_t run_uv(int port, uint64_t warmup, uint64_t n)
{
    uv_loop_t loop;
    uv_tcp_t tcp;
    if (uv_loop_init(&loop) != 0)
        DIE("uv_loop_init failed");
    uv_connect_loopback(&loop, &tcp, port);
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&tcp, &fd) != 0)
        DIE("uv_fileno failed");
    for (uint64_t i = 0; i < warmup; i++)
        uv_send_all((uv_stream_t *)&tcp, fd);
    uint64_t start = now_ns();
    for (uint64_t i = 0; i < n; i++)
        uv_send_all((uv_stream_t *)&tcp, fd);
    uint64_t elapsed = now_ns() - start;
    uv_close((uv_handle_t *)&tcp, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0)
        DIE("uv_loop_close: handles left open");
    return elapsed;
}

/* ---- sockasync sock_send_async ----------------------------------------------------------- */

static void sa_send_one(sock *s, sock_args *e, sem_t *done)
{
    calls++;
    if (sock_send_async(s, e)) {
        waits++;
        sem_wait_all(done); /* the callback (reactor thread) posts it */
    } else if (sock_last_status() != SOCK_STATUS_OK) {
        DIE_SOCK("sock_send_async");
    }
    /* A stream send completes with Success only once all its bytes went out. */
    if (sock_args_socket_error(e) != SOCK_SOCKET_ERROR_SUCCESS)
        DIE("sock_send_async completed with socket error %d", (int)sock_args_socket_error(e));
}

static uint64_t run_sa(int port, uint64_t warmup, uint64_t n)
{
    sock *s = sa_connect(port);
    sem_t done;
    sem_init(&done, 0, 0);
    sock_args *e = sock_args_new(sa_post, &done);
    if (!e || !sock_args_set_buffer(e, message, MSG))
        DIE_SOCK("sock_args_new/sock_args_set_buffer");
    for (uint64_t i = 0; i < warmup; i++)
        sa_send_one(s, e, &done);
    uint64_t start = now_ns();
    for (uint64_t i = 0; i < n; i++)
        sa_send_one(s, e, &done);
    uint64_t elapsed = now_ns() - start;
    if (sock_args_bytes_transferred(e) != MSG)
        DIE("the last send reports %zu bytes, not %d", sock_args_bytes_transferred(e), MSG);
    sock_free(s); /* nothing pending: a graceful close, the reader sees end of stream */
    sock_args_free(e);
    sem_destroy(&done);
    return elapsed;
}

/* ---- sockasync batched sends (io_uring) --------------------------------------------------- */

enum { SLOTS = 256 };

static atomic_uint_fast64_t batch_completed, batch_wanted, batch_failed;
static sem_t batch_progress;

static void on_batched(sock *s, sock_args *e, void *token)
{
    (void)s;
    (void)token;
    if (sock_args_socket_error(e) != SOCK_SOCKET_ERROR_SUCCESS ||
        sock_args_bytes_transferred(e) != MSG)
        atomic_fetch_add(&batch_failed, 1);
    uint64_t done = atomic_fetch_add(&batch_completed, 1) + 1;
    uint64_t wanted = atomic_load(&batch_wanted);
    if (wanted && done >= wanted) {
        atomic_store(&batch_wanted, 0);
        sem_post(&batch_progress);
    }
}

/* Until at least `count` sends have completed (one socket, Inline: in issue order). */
static void batch_wait_for(uint64_t count)
{
    while (atomic_load(&batch_completed) < count) {
        atomic_store(&batch_wanted, count);
        if (atomic_load(&batch_completed) >= count)
            break;
        sem_wait_all(&batch_progress);
    }
}

static uint64_t run_sa_batch(int port, uint64_t warmup, uint64_t n)
{
    if (!sock_runtime_set_backend(SOCK_BACKEND_IO_URING))
        DIE_SOCK("sock_runtime_set_backend");
    if (sock_runtime_backend() != SOCK_BACKEND_IO_URING)
        DIE("io_uring is refused here: the batched path cannot be measured");
    sock *s = sa_connect(port);
    if (!sock_set_option(s, SOCK_OPTION_BATCH_SENDS, 1))
        DIE_SOCK("sock_set_option BATCH_SENDS");
    sem_init(&batch_progress, 0, 0);
    sock_args *args[SLOTS];
    for (int k = 0; k < SLOTS; k++) {
        args[k] = sock_args_new(on_batched, NULL);
        if (!args[k] || !sock_args_set_buffer(args[k], message, MSG))
            DIE_SOCK("sock_args_new/sock_args_set_buffer");
    }
    uint64_t start = 0;
    for (uint64_t i = 0; i < warmup + n; i++) {
        if (i == warmup) {
            batch_wait_for(warmup);
            start = now_ns();
        }
        if (i >= SLOTS)
            batch_wait_for(i - SLOTS + 1); /* args[i % SLOTS] is free again */
        calls++;
        if (!sock_send_async(s, args[i % SLOTS]))
            DIE_SOCK("a batched sock_send_async did not go pending");
        waits++;
    }
    batch_wait_for(warmup + n);
    uint64_t elapsed = now_ns() - start;
    if (atomic_load(&batch_failed) != 0)
        DIE("%" PRIu64 " batched sends failed", (uint64_t)atomic_load(&batch_failed));
    sock_free(s);
    for (int k = 0; k < SLOTS; k++)
        sock_args_free(args[k]);
    sem_destroy(&batch_progress);
    return elapsed;
}

int main(int argc, char **argv)
{
    bench_init("bench_small");
    if (argc != 3)
        parse_mech(NULL, USAGE);
    bool batched = strcmp(argv[1], "sa-batch") == 0;
    enum mech mech = batched ? MECH_SA : parse_mech(argv[1], USAGE);
    uint64_t n = parse_count(argv[2], USAGE);
    uint64_t warmup = n / 100;
    fill_pattern(message, MSG);

    reader r;
    int port;
    reader_start(&r, (warmup + n) * MSG, MSG, true, &port);
    uint64_t elapsed = mech == MECH_RAW  ? run_raw(port, warmup, n)
                       : mech == MECH_UV ? run_uv(port, warmup, n)
                       : batched         ? run_sa_batch(port, warmup, n)
                                         : run_sa(port, warmup, n);
    reader_finish(&r);

    printf("%.1f\n", (double)elapsed / (double)n);
    fprintf(stderr, "stats: mech=%s sends=%" PRIu64 " warmup=%" PRIu64 " calls=%" PRIu64
                    " %s=%" PRIu64 " received=%" PRIu64 "\n",
            argv[1], n, warmup, calls, mech == MECH_SA ? "pending" : "eagain", waits,
            r.received);
    return 0;
}

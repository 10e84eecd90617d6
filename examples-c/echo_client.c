/*
 * echo_client: talks to echo_server and checks every byte that comes back.
 *
 *   echo_client ENDPOINT [MESSAGES] [SIZE]      e.g.  echo_client 127.0.0.1:7777 1000 1024
 *
 * Connects to ENDPOINT ("127.0.0.1:PORT" or "[::1]:PORT"), then MESSAGES times (default
 * 1000) sends SIZE bytes (default 1024) of a pattern that differs per message, reads the
 * echo back until SIZE bytes have arrived, and compares them byte for byte. Finally it ends
 * its stream and waits for the server to end its own. Prints one summary line and exits 0
 * only if every byte matched.
 *
 * How this program uses the model
 * -------------------------------
 * The server (echo_server.c) drives everything from completion callbacks. This client shows
 * the other common style: one thread issues the operations in order and waits for each
 * that goes pending. An operation `sock_X_async(socket, args)` either
 *
 *   - returns true: PENDING. The callback given to sock_args_new runs once, later, on the
 *     library's reactor thread. Ours only raises a flag under a mutex and signals a
 *     condition variable; the main thread waits for that flag, then reads the results from
 *     the args (the library stores them before it calls the callback).
 *   - returns false with sock_last_status() == SOCK_STATUS_OK: it COMPLETED SYNCHRONOUSLY,
 *     on this thread. No callback will come, so we must not wait for one: the results are
 *     in the args already. (On loopback most sends, and receives whose data is already
 *     there, complete this way; waiting for a callback here would hang forever.)
 *   - returns false with any other status: REJECTED, nothing happened.
 *
 * Ownership: this program owns its sock, its sock_args and the two buffers. A buffer
 * must stay valid and untouched while an operation using it is in flight, so on an error
 * path we close the socket (which aborts pending operations through their callbacks) and
 * wait for those callbacks before freeing anything.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sockasync.h"

typedef struct client client;

/* One args object and what its callback tells the main thread. */
typedef struct {
    const char *name; /* for messages: "send", "receive" */
    client *owner;
    sock_args *args;
    bool in_flight; /* pending: a callback is owed (main thread only) */
    bool completed; /* the callback ran; guarded by owner->lock */
} operation;

struct client {
    sock *socket;
    operation send;
    operation receive;
    unsigned char *out, *in; /* message buffers, SIZE bytes each */
    pthread_mutex_t lock;
    pthread_cond_t completed;
};

/*
 * Prints why the sockasync call just made on this thread was rejected. The status and
 * message describe the latest sockasync call on this thread, and sock_status_name is a call
 * too (it resets them): so read and copy them before looking up the name.
 */
static void report_rejected(const char *what)
{
    int32_t status = sock_last_status();
    char message[512];
    snprintf(message, sizeof message, "%s", sock_last_error_message());
    fprintf(stderr, "echo_client: %s rejected (%s): %s\n", what, sock_status_name(status),
            message);
}

/* Results of op_start. */
typedef enum { STARTED_PENDING, STARTED_COMPLETED, STARTED_REJECTED } started;

/* The completion callback: reactor thread. Must not block; it only records and wakes. */
static void on_completed(sock *socket, sock_args *args, void *user_token)
{
    (void)socket;
    (void)args;
    operation *op = user_token;
    pthread_mutex_lock(&op->owner->lock);
    op->completed = true;
    pthread_cond_signal(&op->owner->completed);
    pthread_mutex_unlock(&op->owner->lock);
}

/* Starts `start(socket, op->args)` and says which of the three ways it went. */
static started op_start(operation *op, bool (*start)(sock *, sock_args *))
{
    if (start(op->owner->socket, op->args)) {
        op->in_flight = true;
        return STARTED_PENDING;
    }
    if (sock_last_status() == SOCK_STATUS_OK)
        return STARTED_COMPLETED; /* results are in op->args now, no callback will run */
    report_rejected(op->name);
    return STARTED_REJECTED;
}

/* Waits for the callback of a pending operation. */
static void op_wait(operation *op)
{
    pthread_mutex_lock(&op->owner->lock);
    while (!op->completed)
        pthread_cond_wait(&op->owner->completed, &op->owner->lock);
    op->completed = false; /* consumed: ready for the args' next operation */
    pthread_mutex_unlock(&op->owner->lock);
    op->in_flight = false;
}

/* Runs an operation to completion, either way. False if it was rejected. */
static bool op_run(operation *op, bool (*start)(sock *, sock_args *))
{
    switch (op_start(op, start)) {
    case STARTED_PENDING:
        op_wait(op);
        return true;
    case STARTED_COMPLETED:
        return true;
    default:
        return false;
    }
}

/* Checks the result of a completed operation: Success, and `expected` bytes if not SIZE_MAX. */
static bool op_succeeded(const operation *op, size_t expected)
{
    int32_t error = sock_args_socket_error(op->args);
    size_t bytes = sock_args_bytes_transferred(op->args);
    if (error != SOCK_SOCKET_ERROR_SUCCESS) {
        fprintf(stderr, "echo_client: %s: %s (%" PRId32 ")\n", op->name,
                sock_error_name(error), error);
        return false;
    }
    if (expected != SIZE_MAX && bytes != expected) {
        fprintf(stderr, "echo_client: %s moved %zu bytes, expected %zu\n", op->name, bytes,
                expected);
        return false;
    }
    return true;
}

/* The bytes of message `index`: a pattern that shifts from one message to the next. */
static void fill_message(unsigned char *out, size_t size, unsigned long index)
{
    for (size_t j = 0; j < size; j++)
        out[j] = (unsigned char)((index * 31u + j) % 251u);
}

static bool connect_to(client *c, const char *endpoint)
{
    int32_t family = endpoint[0] == '[' ? SOCK_ADDRESS_FAMILY_INTER_NETWORK_V6
                                        : SOCK_ADDRESS_FAMILY_INTER_NETWORK;
    c->socket = sock_create(family, SOCK_SOCKET_TYPE_STREAM, SOCK_PROTOCOL_TYPE_TCP);
    if (!c->socket) {
        report_rejected("sock_create");
        return false;
    }

    /* The connect gets args of its own, with no buffer: given one, a connect also sends
     * the buffer's bytes once connected, as .NET's ConnectAsync does. They live on this
     * stack frame, which is fine because op_run does not return while it is pending. */
    operation connect = {.name = "connect", .owner = c};
    connect.args = sock_args_new(on_completed, &connect);
    bool ok = connect.args != NULL;
    if (ok && !sock_args_set_remote_endpoint(connect.args, endpoint)) {
        report_rejected("sock_args_set_remote_endpoint");
        ok = false;
    }
    ok = ok && op_run(&connect, sock_connect_async) && op_succeeded(&connect, SIZE_MAX);
    sock_args_free(connect.args);
    if (!ok)
        return false;

    /* Each message is one small write answered by one small echo: no Nagle delays. */
    sock_set_option(c->socket, SOCK_OPTION_NO_DELAY, 1);
    return true;
}

/*
 * Sends message `index` and reads its echo. The send is started first but NOT waited for
 * before receiving: a large message keeps coming back while it is still going out, and if
 * nobody read the echo, the socket buffers on both sides would fill up and both peers
 * would wait on each other forever. So the send may be pending while we receive.
 */
static bool echo_one(client *c, size_t size, unsigned long index)
{
    fill_message(c->out, size, index);
    started send = op_start(&c->send, sock_send_async);
    if (send == STARTED_REJECTED)
        return false;
    if (send == STARTED_COMPLETED && !op_succeeded(&c->send, size))
        return false;

    /* A receive returns whatever has arrived (at least one byte): collect until SIZE,
     * each time into the rest of the buffer, so no byte of the next echo is read early. */
    for (size_t got = 0; got < size;) {
        if (!sock_args_set_range(c->receive.args, got, size - got)) {
            report_rejected("sock_args_set_range");
            return false;
        }
        if (!op_run(&c->receive, sock_receive_async) ||
            !op_succeeded(&c->receive, SIZE_MAX))
            return false;
        size_t bytes = sock_args_bytes_transferred(c->receive.args);
        if (bytes == 0) {
            fprintf(stderr, "echo_client: message %lu: the server ended the stream after "
                            "%zu of %zu bytes\n", index, got, size);
            return false;
        }
        got += bytes;
    }

    /* All of the echo is here, so all of the message went out: collect the send. */
    if (send == STARTED_PENDING) {
        op_wait(&c->send);
        if (!op_succeeded(&c->send, size))
            return false;
    }

    if (memcmp(c->in, c->out, size) != 0) {
        size_t j = 0;
        while (c->in[j] == c->out[j])
            j++;
        fprintf(stderr, "echo_client: message %lu: byte %zu came back as 0x%02x, sent 0x%02x\n",
                index, j, c->in[j], c->out[j]);
        return false;
    }
    return true;
}

/* Ends our stream and expects the server to end its own, with nothing more on the way. */
static bool finish(client *c)
{
    if (!sock_shutdown(c->socket, SOCK_SHUTDOWN_HOW_SEND)) {
        report_rejected("sock_shutdown");
        return false;
    }
    if (!sock_args_set_range(c->receive.args, 0, 1)) {
        report_rejected("sock_args_set_range");
        return false;
    }
    if (!op_run(&c->receive, sock_receive_async) || !op_succeeded(&c->receive, SIZE_MAX))
        return false;
    if (sock_args_bytes_transferred(c->receive.args) != 0) {
        fprintf(stderr, "echo_client: unexpected data after the last echo\n");
        return false;
    }
    return true;
}

static bool parse_count(const char *text, unsigned long long *out)
{
    char *end;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || text[0] == '-' || value == 0)
        return false;
    *out = value;
    return true;
}

static double seconds_since(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

int main(int argc, char **argv)
{
    unsigned long long messages = 1000, size = 1024;
    if (argc < 2 || argc > 4 || (argc > 2 && !parse_count(argv[2], &messages)) ||
        (argc > 3 && !parse_count(argv[3], &size)) || messages > ULONG_MAX ||
        size > SIZE_MAX / 2) {
        fprintf(stderr,
                "usage: %s ENDPOINT [MESSAGES] [SIZE]\n"
                "  ENDPOINT  127.0.0.1:PORT or [::1]:PORT of a running echo_server\n"
                "  MESSAGES  how many messages to echo (default 1000)\n"
                "  SIZE      bytes per message (default 1024)\n",
                argv[0]);
        return 2;
    }

    client c = {0};
    pthread_mutex_init(&c.lock, NULL);
    pthread_cond_init(&c.completed, NULL);
    c.send = (operation){.name = "send", .owner = &c};
    c.receive = (operation){.name = "receive", .owner = &c};
    /* Each callback gets its own operation as user token. */
    c.send.args = sock_args_new(on_completed, &c.send);
    c.receive.args = sock_args_new(on_completed, &c.receive);
    c.out = malloc(size);
    c.in = malloc(size);

    bool ok = c.send.args && c.receive.args && c.out && c.in;
    if (!ok)
        fprintf(stderr, "echo_client: out of memory\n");
    /* The buffers are attached once; each operation then picks its range of them. */
    ok = ok && sock_args_set_buffer(c.send.args, c.out, size) &&
         sock_args_set_buffer(c.receive.args, c.in, size);

    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    ok = ok && connect_to(&c, argv[1]);
    unsigned long done = 0;
    while (ok && done < messages && echo_one(&c, size, done))
        done++;
    ok = ok && done == messages && finish(&c);
    double elapsed = seconds_since(&start);

    if (ok)
        printf("echoed %lu messages of %llu bytes (%llu bytes) in %.2f s\n", done, size,
               (unsigned long long)done * size, elapsed);
    else
        fprintf(stderr, "echo_client: stopped after %lu of %llu messages\n", done, messages);

    /*
     * Cleanup. Closing aborts whatever is still pending (only on an error path): each such
     * operation completes with OperationAborted through its callback, which we wait for,
     * because until then the library may still write into our buffers.
     */
    if (c.socket)
        sock_close(c.socket);
    if (c.send.in_flight)
        op_wait(&c.send);
    if (c.receive.in_flight)
        op_wait(&c.receive);
    sock_free(c.socket);
    sock_args_free(c.send.args);
    sock_args_free(c.receive.args);
    free(c.out);
    free(c.in);
    pthread_cond_destroy(&c.completed);
    pthread_mutex_destroy(&c.lock);
    sock_runtime_shutdown(); /* joins the library's threads */
    return ok ? 0 : 1;
}

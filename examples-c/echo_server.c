/*
 * echo_server: a TCP echo server on sockasync, written the way a .NET server is written
 * with SocketAsyncEventArgs.
 *
 *   echo_server ENDPOINT [MAX_CONNECTIONS]      e.g.  echo_server 127.0.0.1:7777
 *
 * Binds ENDPOINT ("127.0.0.1:PORT" or "[::1]:PORT"; port 0 picks a free one), prints
 * "listening on <endpoint>" as its first line of output, and sends back every byte each
 * client sends until the client ends its stream. With MAX_CONNECTIONS it accepts that many
 * connections, waits for them to finish, and exits; without it, it runs until SIGINT or
 * SIGTERM, which shut it down cleanly too. Exit status 0 when every connection ended with
 * end of stream (or was cut by that shutdown), 1 if something went wrong.
 *
 * How the library's model shapes this program
 * -------------------------------------------
 * Every operation is started with `sock_X_async(socket, args)` and ends one of three ways:
 *
 *   returns true   PENDING. The args' completion callback runs once, later, on the library's
 *                  reactor thread (one thread for every socket), with the results in the args.
 *   returns false, sock_last_status() == SOCK_STATUS_OK
 *                  COMPLETED SYNCHRONOUSLY, right here on the calling thread. The results are
 *                  already in the args and NO callback will run: the caller must process the
 *                  result itself, then start the next operation.
 *   returns false, any other status
 *                  REJECTED. Nothing happened; sock_last_error_message() says why.
 *
 * So each kind of work below is split into two functions, exactly as in .NET samples:
 *
 *   - a "process" function that handles one completed operation, whichever thread
 *     observed the completion, and
 *   - a "start" loop that issues the next operation, and if it completed synchronously
 *     processes it inline and loops. It returns as soon as an operation goes pending: from
 *     then on the callback owns the flow, and calls process + start again itself.
 *
 * Handling synchronous completions in a loop (not by calling the callback recursively) is
 * what keeps the stack flat when data keeps arriving faster than we can drain it.
 *
 * Threads. The callbacks run on the reactor thread; the first accept (and whatever completes
 * synchronously behind it) runs on the main thread. Afterwards the main thread just sleeps on
 * a condition variable until it is time to shut down. Everything several threads touch (the
 * counters, the list of live connections) sits behind `server.lock`. A connection's own
 * fields are only ever touched by whoever holds its single in-flight operation, so they
 * need no lock: one args per connection means at most one operation, hence one thread, at a
 * time.
 *
 * Ownership. We own every sock and sock_args we create or are handed: the listener, the
 * accept args, and for each connection the accepted socket (from sock_args_accept_socket)
 * and its args. A connection frees its own socket and args when it ends, from inside its
 * completion callback (the library allows that). Buffers are ours and must stay valid until
 * the operation using them completes: each connection's buffer lives as long as it does.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "sockasync.h"

enum { BUFFER_SIZE = 64 * 1024, BACKLOG = 128, ENDPOINT_CAP = 64 };

typedef struct server server;

/* One accepted connection. Created when an accept completes, freed when its echo ends. */
typedef struct connection {
    server *srv;
    sock *socket;    /* ours: from sock_args_accept_socket, released with sock_free */
    sock_args *args; /* ours: receives and sends alternate on it, one at a time */
    bool sending;    /* the operation on `args` is (or was just) a send, not a receive */
    size_t to_send;  /* bytes of `buffer` the current send echoes */
    uint64_t echoed; /* bytes echoed over the connection's life */
    struct connection *prev, *next; /* in server.connections; guarded by server.lock */
    unsigned char buffer[BUFFER_SIZE]; /* must outlive every operation using it: it does */
} connection;

struct server {
    sock *listener;
    sock_args *accept_args;
    unsigned long max_connections; /* 0: no limit */

    /* Everything below is shared between the main thread and the reactor thread. */
    pthread_mutex_t lock;
    pthread_cond_t changed; /* signalled whenever anything below changes */
    bool accepting;         /* the accept loop is running (an accept pending or in hand) */
    bool stop_requested;    /* by a signal or by a failure */
    bool stopping;          /* shutdown has begun: no new connections */
    unsigned long accepted, active, finished, failures;
    uint64_t echoed;
    connection *connections; /* the live ones, so shutdown can close them */
};

/* ---- small helpers ---------------------------------------------------------------------- */

/*
 * Prints why the sockasync call just made on this thread was rejected. Must be called
 * before any other sockasync call: the status and message describe the latest call on this
 * thread, and the message text belongs to the library. Even sock_status_name counts as a
 * call (it resets both), so read and copy them first, then look up the name.
 */
static void report_rejected(const char *what)
{
    int32_t status = sock_last_status();
    char message[512];
    snprintf(message, sizeof message, "%s", sock_last_error_message());
    fprintf(stderr, "echo_server: %s rejected (%s): %s\n", what, sock_status_name(status),
            message);
}

static void report_socket_error(const char *what, int32_t error)
{
    fprintf(stderr, "echo_server: %s: %s (%" PRId32 ")\n", what, sock_error_name(error),
            error);
}

/* Asks main to shut down (after a failure or a signal). Call without the lock held. */
static void request_stop(server *srv, bool failed)
{
    pthread_mutex_lock(&srv->lock);
    srv->stop_requested = true;
    if (failed)
        srv->failures++;
    pthread_cond_broadcast(&srv->changed);
    pthread_mutex_unlock(&srv->lock);
}

/* ---- connections: receive, send back, repeat -------------------------------------------- */

static void connection_completed(sock *socket, sock_args *args, void *user_token);

/*
 * Ends a connection and frees it. Runs on whichever thread saw its last operation end,
 * with no operation of its own in flight (so nobody else can touch it but shutdown, which
 * only reaches it through the list). `clean`: it ended with end of stream or by shutdown.
 */
static void connection_end(connection *c, bool clean)
{
    server *srv = c->srv;

    /* Unlink first, so shutdown cannot pick it up (to close it) once it is being freed. */
    pthread_mutex_lock(&srv->lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->connections = c->next;
    if (c->next)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&srv->lock);

    uint64_t echoed = c->echoed;
    /*
     * Closing with no operation pending is graceful: the client reads end of stream.
     * Freeing the args from inside their own completion callback is allowed: the library
     * keeps the memory until the callback returns.
     */
    sock_free(c->socket);
    sock_args_free(c->args);
    free(c);

    /* Count it last: once active hits 0, main may tear everything down and exit. */
    pthread_mutex_lock(&srv->lock);
    srv->active--;
    srv->finished++;
    srv->echoed += echoed;
    if (!clean)
        srv->failures++;
    pthread_cond_broadcast(&srv->changed);
    pthread_mutex_unlock(&srv->lock);
}

/*
 * Processes one completed receive or send (results are in c->args). Returns true if the
 * echo goes on, false if the connection is over (then `*clean` says how it ended).
 */
static bool connection_process(connection *c, bool *clean)
{
    int32_t error = sock_args_socket_error(c->args);
    size_t bytes = sock_args_bytes_transferred(c->args);

    if (error != SOCK_SOCKET_ERROR_SUCCESS) {
        /* OperationAborted: shutdown closed the socket under a pending operation. */
        *clean = error == SOCK_SOCKET_ERROR_OPERATION_ABORTED;
        if (!*clean)
            report_socket_error(c->sending ? "send" : "receive", error);
        return false;
    }
    if (c->sending) {
        /* A stream send completes only once every byte went out (or with an error). */
        c->echoed += bytes;
        c->sending = false;
        return true;
    }
    if (bytes == 0) { /* Success with 0 bytes: the client ended its stream. */
        *clean = true;
        return false;
    }
    c->sending = true; /* echo exactly what arrived: buffer[0, bytes) */
    c->to_send = bytes;
    return true;
}

/*
 * Starts the next operation of the echo, and keeps going for as long as operations complete
 * synchronously. Returns once one is pending (its callback resumes the echo) or the
 * connection has ended (and was freed: do not touch `c` after this returns).
 */
static void connection_run(connection *c)
{
    for (;;) {
        /* Receive into the whole buffer, or send back the part the last receive filled.
         * The args are idle between operations, so they may be reconfigured. */
        size_t count = c->sending ? c->to_send : sizeof c->buffer;
        if (!sock_args_set_range(c->args, 0, count)) {
            report_rejected("sock_args_set_range");
            connection_end(c, false);
            return;
        }

        bool pending = c->sending ? sock_send_async(c->socket, c->args)
                                  : sock_receive_async(c->socket, c->args);
        if (pending)
            return; /* connection_completed takes it from here, on the reactor thread */

        bool clean;
        if (sock_last_status() != SOCK_STATUS_OK) {
            /* Rejected. Disposed means shutdown closed the socket between two operations;
             * anything else is a bug in this program. */
            clean = sock_last_status() == SOCK_STATUS_DISPOSED;
            if (!clean)
                report_rejected(c->sending ? "send" : "receive");
            connection_end(c, clean);
            return;
        }

        /* Completed synchronously: no callback will come, the result is ours to process. */
        if (!connection_process(c, &clean)) {
            connection_end(c, clean);
            return;
        }
    }
}

/* A pending receive or send completed: reactor thread. `user_token` is the connection. */
static void connection_completed(sock *socket, sock_args *args, void *user_token)
{
    (void)socket;
    (void)args;
    connection *c = user_token;
    bool clean;
    if (connection_process(c, &clean))
        connection_run(c);
    else
        connection_end(c, clean);
}

/*
 * Takes ownership of a socket an accept just produced and starts echoing on it. Returns
 * false if the server is shutting down or out of memory (the socket is then freed here).
 */
static bool connection_start(server *srv, sock *socket)
{
    connection *c = calloc(1, sizeof *c);
    sock_args *args = c ? sock_args_new(connection_completed, c) : NULL;
    if (!c || !args || !sock_args_set_buffer(args, c->buffer, sizeof c->buffer)) {
        fprintf(stderr, "echo_server: out of memory for a connection\n");
        sock_args_free(args);
        free(c);
        sock_free(socket);
        request_stop(srv, true);
        return false;
    }
    c->srv = srv;
    c->socket = socket;
    c->args = args;
    /* Small echoes should not wait for Nagle's algorithm. A failure here is harmless. */
    sock_set_option(socket, SOCK_OPTION_NO_DELAY, 1);

    /* Register it, unless shutdown began: then it would never be closed by anyone. */
    pthread_mutex_lock(&srv->lock);
    bool stopping = srv->stopping;
    if (!stopping) {
        c->next = srv->connections;
        if (c->next)
            c->next->prev = c;
        srv->connections = c;
        srv->active++;
    }
    pthread_mutex_unlock(&srv->lock);

    if (stopping) {
        sock_args_free(args);
        free(c);
        sock_free(socket);
        return false;
    }
    connection_run(c); /* may finish (and free) the whole connection before returning */
    return true;
}

/* ---- the accept loop -------------------------------------------------------------------- */

/* Marks the accept loop as stopped (it starts no further accept). */
static void accept_loop_stopped(server *srv)
{
    pthread_mutex_lock(&srv->lock);
    srv->accepting = false;
    pthread_cond_broadcast(&srv->changed);
    pthread_mutex_unlock(&srv->lock);
}

/* Processes one completed accept. Returns true to accept again, false to stop accepting. */
static bool accept_process(server *srv)
{
    int32_t error = sock_args_socket_error(srv->accept_args);
    if (error == SOCK_SOCKET_ERROR_OPERATION_ABORTED)
        return false; /* shutdown closed the listener */
    if (error == SOCK_SOCKET_ERROR_CONNECTION_ABORTED ||
        error == SOCK_SOCKET_ERROR_CONNECTION_RESET)
        return true; /* the client gave up before we got to it: keep accepting */
    if (error != SOCK_SOCKET_ERROR_SUCCESS) {
        report_socket_error("accept", error);
        request_stop(srv, true);
        return false;
    }

    /* The new connected socket is ours from here on; we must sock_free it eventually. */
    sock *socket = sock_args_accept_socket(srv->accept_args);
    pthread_mutex_lock(&srv->lock);
    srv->accepted++;
    bool more = srv->max_connections == 0 || srv->accepted < srv->max_connections;
    pthread_mutex_unlock(&srv->lock);

    return connection_start(srv, socket) && more;
}

/*
 * Issues accepts until one goes pending, processing synchronous completions inline (a
 * client already waiting in the backlog is accepted at once, with no callback). Runs on the
 * main thread for the first accept and on the reactor thread from the accept callback.
 */
static void accept_loop(server *srv)
{
    for (;;) {
        if (sock_accept_async(srv->listener, srv->accept_args))
            return; /* pending: accept_completed continues the loop */
        if (sock_last_status() != SOCK_STATUS_OK) {
            /* Disposed: shutdown closed the listener between two accepts. */
            if (sock_last_status() != SOCK_STATUS_DISPOSED) {
                report_rejected("accept");
                request_stop(srv, true);
            }
            break;
        }
        if (!accept_process(srv))
            break;
    }
    accept_loop_stopped(srv);
}

/* A pending accept completed: reactor thread. `user_token` is the server. */
static void accept_completed(sock *socket, sock_args *args, void *user_token)
{
    (void)socket;
    (void)args;
    server *srv = user_token;
    if (accept_process(srv))
        accept_loop(srv);
    else
        accept_loop_stopped(srv);
}

/* ---- signals: SIGINT / SIGTERM shut down cleanly ----------------------------------------- */

/*
 * The signals are blocked in every thread (the mask is set before the library starts its
 * reactor thread, which inherits it) and taken synchronously by this thread with sigwait:
 * no async-signal-safety concerns, and the reactor thread is never interrupted.
 */
static void *signal_thread(void *arg)
{
    server *srv = arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    int sig;
    if (sigwait(&set, &sig) == 0)
        request_stop(srv, false);
    return NULL;
}

/* ---- main ------------------------------------------------------------------------------- */

static bool parse_count(const char *text, unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long value = strtoul(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || text[0] == '-' || value == 0)
        return false;
    *out = value;
    return true;
}

/* Creates, binds and starts listening; prints the endpoint. Returns false on failure. */
static bool server_listen(server *srv, const char *endpoint)
{
    /* Endpoint text decides the family: "[::1]:PORT" is IPv6, "127.0.0.1:PORT" IPv4. */
    int32_t family = endpoint[0] == '[' ? SOCK_ADDRESS_FAMILY_INTER_NETWORK_V6
                                        : SOCK_ADDRESS_FAMILY_INTER_NETWORK;
    srv->listener = sock_create(family, SOCK_SOCKET_TYPE_STREAM, SOCK_PROTOCOL_TYPE_TCP);
    if (!srv->listener) {
        report_rejected("sock_create");
        return false;
    }
    if (!sock_bind(srv->listener, endpoint)) {
        report_rejected("sock_bind");
        return false;
    }
    if (!sock_listen(srv->listener, BACKLOG)) {
        report_rejected("sock_listen");
        return false;
    }
    char bound[ENDPOINT_CAP]; /* 48 bytes always suffice */
    if (sock_local_endpoint(srv->listener, bound, sizeof bound) == 0) {
        report_rejected("sock_local_endpoint");
        return false;
    }
    /* The first line of output; scripts read it to learn the port. Flush: stdout is
     * fully buffered when it is a file or a pipe. */
    printf("listening on %s\n", bound);
    fflush(stdout);
    return true;
}

int main(int argc, char **argv)
{
    server srv = {0};
    if (argc < 2 || argc > 3 || (argc == 3 && !parse_count(argv[2], &srv.max_connections))) {
        fprintf(stderr,
                "usage: %s ENDPOINT [MAX_CONNECTIONS]\n"
                "  ENDPOINT         127.0.0.1:PORT or [::1]:PORT (port 0 picks a free one)\n"
                "  MAX_CONNECTIONS  exit after serving this many connections (default: no "
                "limit; SIGINT/SIGTERM stop the server)\n",
                argv[0]);
        return 2;
    }
    pthread_mutex_init(&srv.lock, NULL);
    pthread_cond_init(&srv.changed, NULL);

    /* Block the shutdown signals before any thread exists: see signal_thread. */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    pthread_t signal_waiter;
    if (pthread_create(&signal_waiter, NULL, signal_thread, &srv) != 0) {
        fprintf(stderr, "echo_server: cannot start the signal thread\n");
        return 1;
    }

    int status = 1;
    if (server_listen(&srv, argv[1])) {
        /* The accept args carry no buffer (accept with a receive buffer is not supported).
         * Its callback gets the server as user token. */
        srv.accept_args = sock_args_new(accept_completed, &srv);
        srv.accepting = true;
        accept_loop(&srv); /* returns once an accept is pending (or the loop stopped) */

        /* Sleep until there is a reason to stop: the connections are all served, a signal
         * arrived, or something failed. */
        pthread_mutex_lock(&srv.lock);
        while (!srv.stop_requested &&
               !(srv.max_connections && srv.finished >= srv.max_connections))
            pthread_cond_wait(&srv.changed, &srv.lock);
        srv.stopping = true; /* from now on accepted sockets are closed at once */
        pthread_mutex_unlock(&srv.lock);

        /*
         * Shut down. Closing a socket makes each of its pending operations complete with
         * OperationAborted through its callback, on the reactor thread, never inside
         * sock_close: so it is safe to close while holding our lock. Those callbacks end the
         * accept loop and the connections, which is what we wait for.
         */
        sock_close(srv.listener);
        pthread_mutex_lock(&srv.lock);
        for (connection *c = srv.connections; c; c = c->next)
            sock_close(c->socket);
        while (srv.accepting || srv.active > 0)
            pthread_cond_wait(&srv.changed, &srv.lock);
        printf("served %lu connections, echoed %" PRIu64 " bytes\n", srv.finished,
               srv.echoed);
        status = srv.failures == 0 ? 0 : 1;
        pthread_mutex_unlock(&srv.lock);
    }

    /* No operation is in flight any more: everything can go. */
    sock_args_free(srv.accept_args);
    sock_free(srv.listener);

    /* Wake the signal thread (if no signal came) so it can be joined. */
    pthread_kill(signal_waiter, SIGTERM);
    pthread_join(signal_waiter, NULL);
    pthread_cond_destroy(&srv.changed);
    pthread_mutex_destroy(&srv.lock);
    /* Stop the library's threads before leaving (what a managed host must do to exit). */
    sock_runtime_shutdown();
    return status;
}

/*
 * Unix domain sockets and adopted descriptors from C: stream echo over a path and over an
 * abstract name, endpoints read back in the same text form, family mismatches and bad
 * endpoint text rejected, and sock_from_fd / sock_fd with sockets the host made
 * (socketpair, a listening and a connected TCP socket), with and without ownership.
 */
#include "harness.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/un.h>

static sock *unix_stream(void)
{
    return sock_create(SOCK_ADDRESS_FAMILY_UNIX, SOCK_SOCKET_TYPE_STREAM, 0);
}

/* Connects a Unix stream client to `endpoint` (where `l` listens) and accepts it. */
static int unix_pair(sock *l, const char *endpoint, sock **client, sock **server)
{
    waiter wa, wc;
    waiter_init(&wa);
    waiter_init(&wc);
    sock_args *accepting = sock_args_new(on_completed, &wa);
    sock_args *connecting = sock_args_new(on_completed, &wc);
    int ok = 0;
    int accept_pending = sock_accept_async(l, accepting);
    if (!accept_pending && sock_last_status() != SOCK_STATUS_OK)
        goto out;
    *client = unix_stream();
    if (!*client || !sock_args_set_remote_endpoint(connecting, endpoint) ||
        complete(sock_connect_async, *client, connecting, &wc, NULL) !=
            SOCK_SOCKET_ERROR_SUCCESS)
        goto out;
    if (accept_pending && !wait_for(&wa, 1))
        goto out;
    *server = sock_args_accept_socket(accepting);
    ok = *server != NULL && sock_args_socket_error(accepting) == SOCK_SOCKET_ERROR_SUCCESS;
out:
    sock_args_free(accepting);
    sock_args_free(connecting);
    waiter_destroy(&wa);
    waiter_destroy(&wc);
    return ok;
}

/* Sends `text` from a to b and checks it arrives whole (a pending receive, then the send). */
static int echo_once(sock *a, sock *b, const char *text)
{
    waiter wr, ws;
    waiter_init(&wr);
    waiter_init(&ws);
    char in[64] = "";
    size_t len = strlen(text);
    sock_args *r = sock_args_new(on_completed, &wr);
    sock_args *s = sock_args_new(on_completed, &ws);
    int ok = sock_args_set_buffer(r, in, sizeof in) && sock_receive_async(b, r) &&
             sock_args_set_buffer(s, (void *)text, len) &&
             complete(sock_send_async, a, s, &ws, NULL) == SOCK_SOCKET_ERROR_SUCCESS &&
             wait_for(&wr, 1) && wr.error == SOCK_SOCKET_ERROR_SUCCESS && wr.bytes == len &&
             memcmp(in, text, len) == 0;
    sock_args_free(r);
    sock_args_free(s);
    waiter_destroy(&wr);
    waiter_destroy(&ws);
    return ok;
}

static void test_unix_stream_echo_over_a_path(void)
{
    char path[108], endpoint[128], text[160];
    snprintf(path, sizeof path, "/tmp/sockasync-test-%d.sock", (int)getpid());
    snprintf(endpoint, sizeof endpoint, "unix:%s", path);
    unlink(path);
    sock *l = unix_stream();
    CHECK(l != NULL);
    CHECK(sock_bind(l, endpoint));
    struct stat st;
    CHECK(stat(path, &st) == 0 && S_ISSOCK(st.st_mode));
    CHECK(sock_listen(l, 8));
    CHECK(sock_local_endpoint(l, text, sizeof text) == strlen(endpoint));
    CHECK(strcmp(text, endpoint) == 0);

    /* The path is taken while the file exists, as .NET reports it. */
    sock *again = unix_stream();
    CHECK(!sock_bind(again, endpoint));
    CHECK_EQ(sock_last_status(), SOCK_STATUS_SOCKET_ERROR);
    CHECK_EQ(sock_last_socket_error(), SOCK_SOCKET_ERROR_ADDRESS_ALREADY_IN_USE);
    sock_free(again);

    sock *client, *server;
    CHECK(unix_pair(l, endpoint, &client, &server));
    CHECK(sock_remote_endpoint(client, text, sizeof text) > 0);
    CHECK(strcmp(text, endpoint) == 0);
    CHECK(sock_local_endpoint(client, text, sizeof text) == 5);
    CHECK(strcmp(text, "unix:") == 0); /* the client never bound a name */
    CHECK(sock_remote_endpoint(server, text, sizeof text) == 5);
    CHECK(echo_once(client, server, "over a path"));
    CHECK(echo_once(server, client, "and back"));

    /* Too small a buffer for the text: nothing written. */
    char small[8] = "unset";
    CHECK_REJECTED(sock_local_endpoint(l, small, sizeof small), SOCK_STATUS_INVALID_ARGUMENT);
    CHECK(strcmp(small, "unset") == 0);
    sock_free(client);
    sock_free(server);
    sock_free(l);
    CHECK(unlink(path) == 0); /* the file stays after close, as with .NET */
}

static void test_unix_stream_echo_over_an_abstract_name(void)
{
    char endpoint[96], text[128];
    snprintf(endpoint, sizeof endpoint, "unix:@sockasync-test-%d", (int)getpid());
    sock *l = unix_stream();
    CHECK(l != NULL);
    CHECK(sock_bind(l, endpoint));
    CHECK(sock_listen(l, 8));
    CHECK(sock_local_endpoint(l, text, sizeof text) == strlen(endpoint));
    CHECK(strcmp(text, endpoint) == 0);
    sock *client, *server;
    CHECK(unix_pair(l, endpoint, &client, &server));
    CHECK(sock_remote_endpoint(client, text, sizeof text) > 0);
    CHECK(strcmp(text, endpoint) == 0);
    CHECK(echo_once(client, server, "abstract"));
    sock_free(client);
    sock_free(server);
    sock_free(l);
    /* Abstract names go with their socket: the name can be bound again at once. */
    sock *again = unix_stream();
    CHECK(sock_bind(again, endpoint));
    sock_free(again);
}

static void test_unix_endpoints_are_checked(void)
{
    sock *u = unix_stream();
    sock *ip = sock_create(SOCK_ADDRESS_FAMILY_INTER_NETWORK, SOCK_SOCKET_TYPE_STREAM,
                           SOCK_PROTOCOL_TYPE_TCP);
    CHECK(u != NULL && ip != NULL);
    CHECK_REJECTED(sock_bind(u, "127.0.0.1:0"), SOCK_STATUS_NOT_SUPPORTED);
    CHECK_REJECTED(sock_bind(ip, "unix:@x"), SOCK_STATUS_NOT_SUPPORTED);
    char longest[200] = "unix:/";
    memset(longest + 6, 'p', 106);
    longest[112] = '\0'; /* a 107-byte path: the most sun_path holds with its NUL */
    sock_args *e = sock_args_new(on_completed, NULL);
    CHECK(sock_args_set_remote_endpoint(e, longest));
    longest[112] = 'p';
    longest[113] = '\0'; /* 108 bytes: one too many */
    CHECK_REJECTED(sock_args_set_remote_endpoint(e, longest), SOCK_STATUS_INVALID_ARGUMENT);
    static const char *bad[] = {"unix:", "unix:@", "unix", "unix/tmp/x", "Unix:/tmp/x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_REJECTED(sock_args_set_remote_endpoint(e, bad[i]), SOCK_STATUS_INVALID_ARGUMENT);
    /* Connecting a Unix socket to an IP endpoint is the other family: NotSupported. */
    CHECK(sock_args_set_remote_endpoint(e, "127.0.0.1:9"));
    CHECK_REJECTED(sock_connect_async(u, e), SOCK_STATUS_NOT_SUPPORTED);
    /* A path nobody listens on: the connect completes with the kernel's answer. */
    char missing[96];
    snprintf(missing, sizeof missing, "unix:/tmp/sockasync-missing-%d.sock", (int)getpid());
    waiter w;
    waiter_init(&w);
    sock_args *c = sock_args_new(on_completed, &w);
    CHECK(sock_args_set_remote_endpoint(c, missing));
    CHECK_EQ(complete(sock_connect_async, u, c, &w, NULL),
             SOCK_SOCKET_ERROR_ADDRESS_NOT_AVAILABLE); /* ENOENT, as .NET maps it */
    sock_args_free(c);
    sock_args_free(e);
    waiter_destroy(&w);
    sock_free(u);
    sock_free(ip);
}

/* ---- adopted descriptors -------------------------------------------------- */

static int is_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0;
}

static void test_socketpair_ends_adopted_with_and_without_ownership(void)
{
    int fds[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
    sock *owned = sock_from_fd(fds[0], true);
    CHECK(owned != NULL);
    CHECK_EQ(sock_fd(owned), fds[0]);
    sock *shared = sock_from_fd(fds[1], false);
    CHECK(shared != NULL);
    CHECK(sock_fd(shared) >= 0 && sock_fd(shared) != fds[1]); /* a duplicate */
    CHECK(fcntl(fds[1], F_GETFL) & O_NONBLOCK);                /* one open file */
    CHECK(echo_once(owned, shared, "pair"));
    CHECK(echo_once(shared, owned, "riap"));
    char text[32];
    CHECK(sock_remote_endpoint(owned, text, sizeof text) == 5);

    sock_free(shared);
    CHECK(is_open(fds[1])); /* the host's own descriptor is still the host's */
    sock_close(owned);
    CHECK(!is_open(fds[0])); /* owned: closed with the socket */
    CHECK_EQ(sock_fd(owned), -1);
    CHECK_EQ(sock_last_status(), SOCK_STATUS_DISPOSED);
    sock_free(owned);
    close(fds[1]);
}

static void test_adopted_tcp_sockets_keep_their_state(void)
{
    /* A listening socket made with plain POSIX calls: the library accepts on it. */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    CHECK(bind(lfd, (struct sockaddr *)&a, sizeof a) == 0 && listen(lfd, 4) == 0);
    CHECK(getsockname(lfd, (struct sockaddr *)&a, &alen) == 0);
    sock *l = sock_from_fd(lfd, true);
    CHECK(l != NULL);
    waiter wa;
    waiter_init(&wa);
    sock_args *accepting = sock_args_new(on_completed, &wa);
    int pending = sock_accept_async(l, accepting); /* listening and bound: accepted */
    CHECK(pending || sock_last_status() == SOCK_STATUS_OK);
    int peer = raw_connect(ntohs(a.sin_port));
    CHECK(peer >= 0);
    if (pending)
        CHECK(wait_for(&wa, 1));
    sock *server = sock_args_accept_socket(accepting);
    CHECK(server != NULL);

    /* The peer's side, adopted while connected: sends go out at once. */
    sock *client = sock_from_fd(peer, false);
    CHECK(client != NULL);
    CHECK(echo_once(client, server, "adopted"));
    sock *sockets[] = {client, server, l};
    for (int i = 0; i < 3; i++)
        sock_free(sockets[i]);
    sock_args_free(accepting);
    waiter_destroy(&wa);
    close(peer);
}

static void test_sock_from_fd_rejects_what_is_not_a_usable_socket(void)
{
    CHECK(sock_from_fd(-1, true) == NULL);
    CHECK_EQ(sock_last_status(), SOCK_STATUS_INVALID_ARGUMENT);
    int p[2];
    CHECK(pipe(p) == 0);
    CHECK(sock_from_fd(p[0], true) == NULL);
    CHECK_EQ(sock_last_status(), SOCK_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(sock_last_error_message(), "not a socket") != NULL);
    CHECK(is_open(p[0])); /* a failed call leaves the descriptor to its owner */
    close(p[0]);
    close(p[1]);
    CHECK(sock_from_fd(p[0], true) == NULL); /* closed now */
    CHECK_EQ(sock_last_status(), SOCK_STATUS_INVALID_ARGUMENT);
    int seq[2];
    CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, seq) == 0);
    CHECK(sock_from_fd(seq[0], true) == NULL);
    CHECK_EQ(sock_last_status(), SOCK_STATUS_NOT_SUPPORTED);
    CHECK(is_open(seq[0]));
    close(seq[0]);
    close(seq[1]);
    CHECK_EQ(sock_fd(NULL), -1);
    CHECK_EQ(sock_last_status(), SOCK_STATUS_NULL_ARGUMENT);
}

int main(void)
{
    RUN(test_unix_stream_echo_over_a_path);
    RUN(test_unix_stream_echo_over_an_abstract_name);
    RUN(test_unix_endpoints_are_checked);
    RUN(test_socketpair_ends_adopted_with_and_without_ownership);
    RUN(test_adopted_tcp_sockets_keep_their_state);
    RUN(test_sock_from_fd_rejects_what_is_not_a_usable_socket);
    return h_finish("test_unix");
}

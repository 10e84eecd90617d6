/*
 * Send packets from C (sock_args_set_send_packets, sock_send_packets_async): memory, path
 * and descriptor elements arriving in order byte for byte, a 100 MB file sent while the
 * peer reads nothing until the call went pending, .NET's rules (empty list, empty memory
 * elements, count 0 = to the end, a range past the end, a missing file, an unconnected
 * socket), the element checks, close while pending, no SIGPIPE, a Unix stream socket, and
 * args reused afterwards. Files live in a directory made under /tmp and removed at the end.
 */
#include "harness.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/time.h>

#define PEER_TIMEOUT_S 20
#define MIB ((size_t)1 << 20)

static char dir[64];

/* ---- helpers ---------------------------------------------------------------------------- */

/* A reproducible stream of 8-byte words (splitmix64) from a seed. */
static uint64_t next_word(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Fills `n` bytes (a multiple of 8) with the next words of the stream. */
static void fill_words(uint8_t *p, size_t n, uint64_t *state)
{
    for (size_t i = 0; i < n; i += 8) {
        uint64_t w = next_word(state);
        memcpy(p + i, &w, 8);
    }
}

static void path_of(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", dir, name);
}

/* Writes `len` bytes (a multiple of 1 MiB) of the seed's stream to the file `name`. */
static int write_seeded_file(const char *name, uint64_t seed, size_t len)
{
    char path[128];
    path_of(path, sizeof path, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CHECK_OR(fd >= 0, 0);
    uint8_t *block = malloc(MIB);
    CHECK_OR(block != NULL, 0);
    int ok = 1;
    for (size_t done = 0; ok && done < len; done += MIB) {
        fill_words(block, MIB, &seed);
        ok = write(fd, block, MIB) == (ssize_t)MIB;
    }
    free(block);
    close(fd);
    return ok;
}

static int write_file(const char *name, const void *data, size_t len)
{
    char path[128];
    path_of(path, sizeof path, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CHECK_OR(fd >= 0, 0);
    int ok = write(fd, data, len) == (ssize_t)len;
    close(fd);
    return ok;
}

static void remove_file(const char *name)
{
    char path[128];
    path_of(path, sizeof path, name);
    unlink(path);
}

/* Reads exactly `len` bytes from the peer and checks them against the seed's stream. */
static int read_seeded(int peer, uint64_t seed, size_t len)
{
    uint8_t *expected = malloc(MIB), *got = malloc(MIB);
    int ok = expected && got;
    for (size_t done = 0; ok && done < len; done += MIB) {
        size_t n = len - done < MIB ? len - done : MIB;
        fill_words(expected, MIB, &seed);
        ok = read_exact(peer, got, n) && memcmp(got, expected, n) == 0;
        if (!ok)
            fprintf(stderr, "  bytes %zu..%zu differ or did not come\n", done, done + n);
    }
    free(expected);
    free(got);
    return ok;
}

static sock_send_packet memory(const void *buffer, size_t count)
{
    return (sock_send_packet){.kind = SOCK_SEND_PACKET_KIND_MEMORY, .buffer = buffer,
                              .count = count};
}

static sock_send_packet by_path(const char *path, int64_t offset, size_t count)
{
    return (sock_send_packet){.kind = SOCK_SEND_PACKET_KIND_PATH, .path = path,
                              .offset = offset, .count = count};
}

static sock_send_packet by_fd(int fd, int64_t offset, size_t count)
{
    return (sock_send_packet){.kind = SOCK_SEND_PACKET_KIND_FD, .fd = fd, .offset = offset,
                              .count = count};
}

/* A library socket connected to a blocking POSIX peer that gives up after a while. */
static int peer_of(sock **s)
{
    int peer = connected_to_raw(s);
    struct timeval tv = {.tv_sec = PEER_TIMEOUT_S};
    setsockopt(peer, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return peer;
}

/* Sends "|mark" with a plain send; the peer's next bytes must be `before`, then the mark:
 * what went out before arrived, and nothing else is on the way. */
static int next_bytes_are(sock *s, int peer, const char *before)
{
    static const char mark[] = "|mark";
    waiter w;
    waiter_init(&w);
    sock_args *e = sock_args_new(on_completed, &w);
    size_t n = strlen(before), m = sizeof mark - 1;
    char got[256] = "";
    int ok = n + m <= sizeof got && sock_args_set_buffer(e, (void *)mark, m) &&
             complete(sock_send_async, s, e, &w, NULL) == SOCK_SOCKET_ERROR_SUCCESS &&
             read_exact(peer, got, n + m) && memcmp(got, before, n) == 0 &&
             memcmp(got + n, mark, m) == 0;
    sock_args_free(e);
    waiter_destroy(&w);
    return ok;
}

/*
 * Writes the file `name` (`len` bytes of the seed's stream), connects *s to a peer that reads
 * nothing yet, and starts a send-packets of the whole file on new args *e (reporting to w),
 * which must go pending. Returns the peer, or -1.
 */
static int start_whole_file(const char *name, uint64_t seed, size_t len, char *path,
                            size_t cap, sock **s, sock_args **e, waiter *w)
{
    path_of(path, cap, name);
    CHECK_OR(write_seeded_file(name, seed, len), -1);
    int peer = peer_of(s);
    CHECK_OR(peer >= 0, -1);
    waiter_init(w);
    *e = sock_args_new(on_completed, w);
    sock_send_packet whole = by_path(path, 0, 0);
    CHECK_OR(sock_args_set_send_packets(*e, &whole, 1), -1);
    CHECK_OR(sock_send_packets_async(*s, *e), -1);
    return peer;
}

/* How many of this process's descriptors are open on `path`. */
static int open_on(const char *path)
{
    int count = 0;
    for (int fd = 0; fd < 1024; fd++) {
        char link[64], target[256];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n > 0) {
            target[n] = 0;
            count += strcmp(target, path) == 0;
        }
    }
    return count;
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_memory_path_and_fd_elements_arrive_in_order(void)
{
    static const char head[] = "HEAD:", middle[] = ":MIDDLE:", tail[] = ":TAIL";
    char one[4000], two[3001], path[128];
    for (size_t i = 0; i < sizeof one; i++)
        one[i] = (char)('a' + i % 26);
    for (size_t i = 0; i < sizeof two; i++)
        two[i] = (char)('0' + i % 10);
    CHECK(write_file("one", one, sizeof one));
    CHECK(write_file("two", two, sizeof two));
    path_of(path, sizeof path, "one");
    char two_path[128];
    path_of(two_path, sizeof two_path, "two");
    int fd = open(two_path, O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0);
    CHECK(lseek(fd, 11, SEEK_SET) == 11);

    sock *s;
    int peer = peer_of(&s);
    CHECK(peer >= 0);
    waiter w;
    waiter_init(&w);
    sock_args *e = sock_args_new(on_completed, &w);
    sock_send_packet elements[] = {
        memory(head, 5), by_path(path, 100, 200), by_fd(fd, 0, 0), memory(middle, 8),
        by_path(path, 0, 0), {.kind = SOCK_SEND_PACKET_KIND_MEMORY, .buffer = tail,
                               .offset = 1, .count = 4},
    };
    CHECK(sock_args_set_send_packets(e, elements, 6));
    /* The array and its paths were copied: scribbling over them changes nothing. */
    memset(elements, 0xff, sizeof elements);
    char saved_path[128];
    memcpy(saved_path, path, sizeof path);
    memset(path, 'x', sizeof path - 1);

    size_t total = 5 + 200 + sizeof two + 8 + sizeof one + 4;
    CHECK_EQ(complete(sock_send_packets_async, s, e, &w, NULL), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(sock_args_bytes_transferred(e), total);
    CHECK_EQ(sock_args_last_operation(e), SOCK_ASYNC_OPERATION_SEND_PACKETS);
    char *got = malloc(total);
    CHECK(got && read_exact(peer, got, total));
    size_t at = 0;
    CHECK(memcmp(got + at, head, 5) == 0);
    at += 5;
    CHECK(memcmp(got + at, one + 100, 200) == 0);
    at += 200;
    CHECK(memcmp(got + at, two, sizeof two) == 0);
    at += sizeof two;
    CHECK(memcmp(got + at, middle, 8) == 0);
    at += 8;
    CHECK(memcmp(got + at, one, sizeof one) == 0);
    at += sizeof one;
    CHECK(memcmp(got + at, "TAIL", 4) == 0);
    free(got);
    CHECK(next_bytes_are(s, peer, ""));

    /* The descriptor is the caller's: still open, its position where it was. */
    CHECK_EQ(lseek(fd, 0, SEEK_CUR), 11);
    CHECK_EQ(open_on(saved_path), 0);
    close(fd);
    close(peer);
    sock_args_free(e);
    sock_free(s);
    waiter_destroy(&w);
}

static void test_a_100_mb_file_goes_pending_and_arrives_whole(void)
{
    const uint64_t seed = 0x5eed0100;
    const size_t len = 100 * MIB;
    char path[128];
    sock *s;
    sock_args *e;
    waiter w;
    /* The peer reads nothing before the call returns: 100 MB cannot fit the buffers. */
    int peer = start_whole_file("large", seed, len, path, sizeof path, &s, &e, &w);
    CHECK(peer >= 0);
    CHECK_EQ(open_on(path), 1);
    CHECK_REJECTED(sock_args_set_send_packets(e, NULL, 0), SOCK_STATUS_IN_PROGRESS);
    CHECK_REJECTED(sock_send_packets_async(s, e), SOCK_STATUS_IN_PROGRESS);
    CHECK(read_seeded(peer, seed, len));
    CHECK(wait_for(&w, 1));
    CHECK_EQ(w.error, SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(w.bytes, len);
    CHECK_EQ(w.operation, SOCK_ASYNC_OPERATION_SEND_PACKETS);
    CHECK_EQ(open_on(path), 0);
    CHECK(next_bytes_are(s, peer, ""));
    close(peer);
    sock_args_free(e);
    sock_free(s);
    waiter_destroy(&w);
    remove_file("large");
}

static void test_dotnet_rules_empty_skipped_to_the_end_and_past_the_end(void)
{
    char content[1000], path[128];
    for (size_t i = 0; i < sizeof content; i++)
        content[i] = (char)('A' + i % 26);
    CHECK(write_file("thousand", content, sizeof content));
    path_of(path, sizeof path, "thousand");
    sock *s;
    int peer = peer_of(&s);
    CHECK(peer >= 0);
    waiter w;
    waiter_init(&w);
    sock_args *e = sock_args_new(on_completed, &w);

    /* An empty list: Success with 0, at once. */
    sock_send_packet none[1] = {{0}};
    CHECK(sock_args_set_send_packets(e, none, 0));
    CHECK(!sock_send_packets_async(s, e));
    CHECK_EQ(sock_last_status(), SOCK_STATUS_OK);
    CHECK_EQ(sock_args_socket_error(e), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(sock_args_bytes_transferred(e), 0);
    CHECK_EQ(sock_args_last_operation(e), SOCK_ASYNC_OPERATION_SEND_PACKETS);

    /* Empty memory elements are skipped; count 0 sends a file from the offset to its end. */
    sock_send_packet skipped[] = {memory(NULL, 0), memory("ab", 2), memory("zz", 0),
                                  by_path(path, 990, 0), by_path(path, 1000, 0)};
    CHECK(sock_args_set_send_packets(e, skipped, 5));
    CHECK_EQ(complete(sock_send_packets_async, s, e, &w, NULL), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(sock_args_bytes_transferred(e), 12);
    char expected[64];
    snprintf(expected, sizeof expected, "ab%.10s", content + 990);
    CHECK(next_bytes_are(s, peer, expected));

    /* Past the end: InvalidArgument, the bytes before it, and nothing after it. */
    sock_send_packet past[][3] = {
        {memory("head", 4), by_path(path, 500, 501), memory("tail", 4)},
        {memory("head", 4), by_path(path, 1001, 0), memory("tail", 4)},
    };
    for (int i = 0; i < 2; i++) {
        CHECK(sock_args_set_send_packets(e, past[i], 3));
        CHECK_EQ(complete(sock_send_packets_async, s, e, &w, NULL),
                 SOCK_SOCKET_ERROR_INVALID_ARGUMENT);
        CHECK_EQ(sock_args_bytes_transferred(e), 4);
        CHECK(next_bytes_are(s, peer, "head"));
    }
    CHECK_EQ(open_on(path), 0);
    close(peer);
    sock_args_free(e);
    sock_free(s);
    waiter_destroy(&w);
}

static void test_a_missing_file_is_rejected_at_the_call_naming_it(void)
{
    char present[128], missing[128];
    CHECK(write_file("present", "here", 4));
    path_of(present, sizeof present, "present");
    path_of(missing, sizeof missing, "no-such-file");
    sock *s;
    int peer = peer_of(&s);
    CHECK(peer >= 0);
    waiter w;
    waiter_init(&w);
    sock_args *e = sock_args_new(on_completed, &w);
    CHECK(sock_args_set_buffer(e, "before", 6));
    CHECK_EQ(complete(sock_send_async, s, e, &w, NULL), SOCK_SOCKET_ERROR_SUCCESS);

    sock_send_packet elements[] = {memory("head", 4), by_path(present, 0, 0),
                                   by_path(missing, 0, 0)};
    CHECK(sock_args_set_send_packets(e, elements, 3));
    CHECK_REJECTED(sock_send_packets_async(s, e), SOCK_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(sock_last_error_message(), missing) != NULL);
    /* Nothing changed or was sent; the file it had opened is closed again. */
    CHECK_EQ(sock_args_last_operation(e), SOCK_ASYNC_OPERATION_SEND);
    CHECK_EQ(sock_args_bytes_transferred(e), 6);
    CHECK_EQ(open_on(present), 0);
    CHECK(next_bytes_are(s, peer, "before"));

    /* A descriptor that is not open is refused at the call as well. */
    sock_send_packet stale = by_fd(999999, 0, 0);
    CHECK(sock_args_set_send_packets(e, &stale, 1));
    CHECK_REJECTED(sock_send_packets_async(s, e), SOCK_STATUS_INVALID_ARGUMENT);

    /* Once it exists the same args send it. */
    CHECK(write_file("no-such-file", "now", 3));
    CHECK(sock_args_set_send_packets(e, elements + 2, 1));
    CHECK_EQ(complete(sock_send_packets_async, s, e, &w, NULL), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK(next_bytes_are(s, peer, "now"));
    close(peer);
    sock_args_free(e);
    sock_free(s);
    waiter_destroy(&w);
}

static void test_rejections_unconnected_no_elements_null_and_closed(void)
{
    waiter w;
    waiter_init(&w);
    sock_args *e = sock_args_new(on_completed, &w);
    sock *fresh = sock_create(SOCK_ADDRESS_FAMILY_INTER_NETWORK, SOCK_SOCKET_TYPE_STREAM,
                              SOCK_PROTOCOL_TYPE_TCP);
    CHECK(fresh != NULL);
    /* .NET's order: no elements (ArgumentException) before not connected. */
    CHECK_REJECTED(sock_send_packets_async(fresh, e), SOCK_STATUS_INVALID_ARGUMENT);
    sock_send_packet one = memory("x", 1);
    CHECK(sock_args_set_send_packets(e, &one, 1));
    CHECK_REJECTED(sock_send_packets_async(fresh, e), SOCK_STATUS_NOT_SUPPORTED);
    CHECK_REJECTED(sock_send_packets_async(NULL, e), SOCK_STATUS_NULL_ARGUMENT);
    CHECK_REJECTED(sock_send_packets_async(fresh, NULL), SOCK_STATUS_NULL_ARGUMENT);

    sock *udp = sock_create(SOCK_ADDRESS_FAMILY_INTER_NETWORK, SOCK_SOCKET_TYPE_DGRAM,
                            SOCK_PROTOCOL_TYPE_UDP);
    CHECK(udp != NULL && sock_bind(udp, "127.0.0.1:0"));
    char ep[64];
    CHECK(sock_local_endpoint(udp, ep, sizeof ep) > 0);
    sock_args *c = sock_args_new(on_completed, &w);
    CHECK(sock_args_set_remote_endpoint(c, ep));
    CHECK_EQ(complete(sock_connect_async, udp, c, &w, NULL), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_REJECTED(sock_send_packets_async(udp, e), SOCK_STATUS_NOT_SUPPORTED);

    sock_close(fresh);
    CHECK_REJECTED(sock_send_packets_async(fresh, e), SOCK_STATUS_DISPOSED);
    CHECK_REJECTED(sock_send_packets_async(fresh, NULL), SOCK_STATUS_DISPOSED);
    CHECK_EQ(sock_args_last_operation(e), SOCK_ASYNC_OPERATION_NONE);
    sock_args_free(c);
    sock_args_free(e);
    sock_free(fresh);
    sock_free(udp);
    waiter_destroy(&w);
}

static void test_elements_are_checked_when_set(void)
{
    waiter w;
    waiter_init(&w);
    sock_args *e = sock_args_new(on_completed, &w);
    sock_send_packet bad[] = {
        {.kind = 7, .count = 1},
        {.kind = SOCK_SEND_PACKET_KIND_PATH, .path = NULL},
        {.kind = SOCK_SEND_PACKET_KIND_PATH, .path = ""},
        {.kind = SOCK_SEND_PACKET_KIND_MEMORY, .buffer = NULL, .count = 3},
        {.kind = SOCK_SEND_PACKET_KIND_MEMORY, .buffer = "abc", .offset = -1, .count = 1},
        {.kind = SOCK_SEND_PACKET_KIND_MEMORY, .buffer = "abc", .offset = 1,
         .count = SIZE_MAX},
        {.kind = SOCK_SEND_PACKET_KIND_PATH, .path = "/tmp", .offset = -5},
        {.kind = SOCK_SEND_PACKET_KIND_FD, .fd = -1},
    };
    sock_send_packet good = memory("ok", 2);
    CHECK(sock_args_set_send_packets(e, &good, 1));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sock_send_packet list[2] = {good, bad[i]};
        CHECK_REJECTED(sock_args_set_send_packets(e, list, 2), SOCK_STATUS_INVALID_ARGUMENT);
        CHECK(strstr(sock_last_error_message(), "element 1") != NULL);
    }
    CHECK_REJECTED(sock_args_set_send_packets(NULL, &good, 1), SOCK_STATUS_NULL_ARGUMENT);
    sock *s;
    int peer = peer_of(&s);
    CHECK(peer >= 0);
    /* Each rejected list left the elements set before it. */
    CHECK_EQ(complete(sock_send_packets_async, s, e, &w, NULL), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK(next_bytes_are(s, peer, "ok"));
    /* NULL clears (so the operation is refused for want of elements), whatever the count. */
    CHECK(sock_args_set_send_packets(e, NULL, 5));
    CHECK_REJECTED(sock_send_packets_async(s, e), SOCK_STATUS_INVALID_ARGUMENT);
    close(peer);
    sock_free(s);
    sock_args_free(e);
    waiter_destroy(&w);
}

static void test_close_while_pending_aborts_with_the_bytes_sent(void)
{
    const size_t len = 16 * MIB;
    char path[128];
    sock *s;
    sock_args *e;
    waiter w;
    int peer = start_whole_file("aborted", 3, len, path, sizeof path, &s, &e, &w);
    CHECK(peer >= 0);
    sock_close(s);
    CHECK(wait_for(&w, 1));
    CHECK_EQ(w.error, SOCK_SOCKET_ERROR_OPERATION_ABORTED);
    CHECK_EQ(w.operation, SOCK_ASYNC_OPERATION_SEND_PACKETS);
    CHECK(w.bytes > 0 && w.bytes < len);
    CHECK_EQ(open_on(path), 0);
    close(peer);
    sock_free(s);

    /* The args work again at once, elements still set, for a plain send too. */
    peer = peer_of(&s);
    CHECK(peer >= 0);
    CHECK(write_file("aborted", "again", 5));
    CHECK_EQ(complete(sock_send_packets_async, s, e, &w, NULL), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK(sock_args_set_buffer(e, "+send", 5));
    CHECK_EQ(complete(sock_send_async, s, e, &w, NULL), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK(next_bytes_are(s, peer, "again+send"));
    close(peer);
    sock_args_free(e);
    sock_free(s);
    waiter_destroy(&w);
    remove_file("aborted");
}

/* sendfile has no MSG_NOSIGNAL: without the library's care the first send after the peer
 * went away would kill this process with SIGPIPE (whose default disposition it keeps). */
static void test_send_packets_after_the_peer_closed_raises_no_sigpipe(void)
{
    char path[128];
    static char content[64 * 1024];
    memset(content, 'f', sizeof content);
    CHECK(write_file("sigpipe", content, sizeof content));
    path_of(path, sizeof path, "sigpipe");
    sock *s;
    int peer = peer_of(&s);
    CHECK(peer >= 0);
    close(peer);
    waiter w;
    waiter_init(&w);
    sock_args *e = sock_args_new(on_completed, &w);
    /* The peer's FIN has arrived once a receive sees end of stream. */
    char in[4];
    CHECK(sock_args_set_buffer(e, in, sizeof in));
    CHECK_EQ(complete(sock_receive_async, s, e, &w, NULL), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(sock_args_bytes_transferred(e), 0);
    sock_send_packet whole = by_path(path, 0, 0);
    CHECK(sock_args_set_send_packets(e, &whole, 1));
    int errors = 0;
    for (int i = 0; i < 1000 && errors < 20; i++) {
        int32_t err = complete(sock_send_packets_async, s, e, &w, NULL);
        CHECK(err != INT32_MIN);
        if (err != SOCK_SOCKET_ERROR_SUCCESS) {
            CHECK(err == SOCK_SOCKET_ERROR_SHUTDOWN ||
                  err == SOCK_SOCKET_ERROR_CONNECTION_RESET);
            errors++;
        }
    }
    CHECK_EQ(errors, 20); /* still alive, and every later send failed */
    sigset_t pending;
    CHECK(sigpending(&pending) == 0 && !sigismember(&pending, SIGPIPE));
    sock_args_free(e);
    sock_free(s);
    waiter_destroy(&w);
    remove_file("sigpipe");
}

static void test_a_file_over_a_unix_stream_socket(void)
{
    const uint64_t seed = 11;
    const size_t len = 4 * MIB;
    char path[128];
    path_of(path, sizeof path, "unix");
    CHECK(write_seeded_file("unix", seed, len));
    int fds[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
    sock *s = sock_from_fd(fds[0], true);
    CHECK(s != NULL);
    waiter w;
    waiter_init(&w);
    sock_args *e = sock_args_new(on_completed, &w);
    sock_send_packet elements[] = {by_path(path, 0, 0), memory("!", 1)};
    CHECK(sock_args_set_send_packets(e, elements, 2));
    int pending = sock_send_packets_async(s, e);
    CHECK(pending || sock_last_status() == SOCK_STATUS_OK);
    CHECK(read_seeded(fds[1], seed, len));
    char bang = 0;
    CHECK(read_exact(fds[1], &bang, 1) && bang == '!');
    if (pending)
        CHECK(wait_for(&w, 1));
    CHECK_EQ(sock_args_socket_error(e), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(sock_args_bytes_transferred(e), len + 1);
    close(fds[1]);
    sock_args_free(e);
    sock_free(s);
    waiter_destroy(&w);
    remove_file("unix");
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/sockasync-packets-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_memory_path_and_fd_elements_arrive_in_order);
    RUN(test_a_100_mb_file_goes_pending_and_arrives_whole);
    RUN(test_dotnet_rules_empty_skipped_to_the_end_and_past_the_end);
    RUN(test_a_missing_file_is_rejected_at_the_call_naming_it);
    RUN(test_rejections_unconnected_no_elements_null_and_closed);
    RUN(test_elements_are_checked_when_set);
    RUN(test_close_while_pending_aborts_with_the_bytes_sent);
    RUN(test_send_packets_after_the_peer_closed_raises_no_sigpipe);
    RUN(test_a_file_over_a_unix_stream_socket);
    const char *names[] = {"one", "two", "thousand", "present", "no-such-file", "large",
                           "aborted", "sigpipe", "unix"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        remove_file(names[i]);
    rmdir(dir);
    return h_finish("test_packets");
}

/*
 * Datagrams and flags from C: send-to and receive-from over IPv4, IPv6 and Unix datagram
 * sockets, sender endpoints (IPv4-mapped on a dual-mode IPv6 socket), one args sent to two
 * endpoints, MessageSize, truncation, Peek (datagram and stream), zero-length datagrams,
 * buffer lists as one datagram past IOV_MAX entries, a pending receive aborted by close, and
 * every rejection.
 */
#include "harness.h"

#define V4 SOCK_ADDRESS_FAMILY_INTER_NETWORK
#define V6 SOCK_ADDRESS_FAMILY_INTER_NETWORK_V6

static sock *udp(int32_t family, const char *bind_to, char *endpoint, size_t cap)
{
    sock *s = sock_create(family, SOCK_SOCKET_TYPE_DGRAM, family == SOCK_ADDRESS_FAMILY_UNIX
                                                               ? 0
                                                               : SOCK_PROTOCOL_TYPE_UDP);
    if (!s)
        return NULL;
    if (bind_to && (!sock_bind(s, bind_to) || sock_local_endpoint(s, endpoint, cap) == 0)) {
        sock_free(s);
        return NULL;
    }
    return s;
}

/* A datagram from `from` to `to_endpoint` and received by `to` (a receive issued first, so
 * it goes pending): checks sizes, the operations recorded, and the sender endpoint the
 * receiver reports (if `sender` is given). */
static int round_trip(sock *from, const char *to_endpoint, sock *to, const char *sender)
{
    waiter ws, wr;
    waiter_init(&ws);
    waiter_init(&wr);
    sock_args *s = sock_args_new(on_completed, &ws);
    sock_args *r = sock_args_new(on_completed, &wr);
    char in[32] = "", seen[128] = "";
    int ok = sock_args_set_buffer(r, in, sizeof in) && sock_receive_from_async(to, r);
    ok = ok && sock_args_set_remote_endpoint(s, to_endpoint) &&
         sock_args_set_buffer(s, "datagram", 8) &&
         complete(sock_send_to_async, from, s, &ws, NULL) == SOCK_SOCKET_ERROR_SUCCESS &&
         sock_args_bytes_transferred(s) == 8 &&
         sock_args_last_operation(s) == SOCK_ASYNC_OPERATION_SEND_TO;
    ok = ok && wait_for(&wr, 1) && wr.error == SOCK_SOCKET_ERROR_SUCCESS && wr.bytes == 8 &&
         memcmp(in, "datagram", 8) == 0 &&
         wr.operation == SOCK_ASYNC_OPERATION_RECEIVE_FROM &&
         sock_args_flags(r) == SOCK_SOCKET_FLAGS_NONE &&
         sock_args_remote_endpoint(r, seen, sizeof seen) > 0;
    if (ok && sender && strcmp(seen, sender) != 0) {
        fprintf(stderr, "  sender seen as %s, expected %s\n", seen, sender);
        ok = 0;
    }
    sock_args_free(s);
    sock_args_free(r);
    waiter_destroy(&ws);
    waiter_destroy(&wr);
    return ok;
}

static void test_send_to_and_receive_from_over_ipv4_ipv6_and_unix(void)
{
    char a_ep[64], b_ep[64];
    sock *a = udp(V4, "127.0.0.1:0", a_ep, sizeof a_ep);
    sock *b = udp(V4, "127.0.0.1:0", b_ep, sizeof b_ep);
    CHECK(a && b);
    CHECK(round_trip(a, b_ep, b, a_ep));
    CHECK(round_trip(b, a_ep, a, b_ep));
    sock_free(a);
    sock_free(b);

    sock *a6 = udp(V6, "[::1]:0", a_ep, sizeof a_ep);
    sock *b6 = udp(V6, "[::1]:0", b_ep, sizeof b_ep);
    CHECK(a6 && b6);
    CHECK(round_trip(a6, b_ep, b6, a_ep));
    sock_free(a6);
    sock_free(b6);

    char ua[64], ub[64];
    snprintf(ua, sizeof ua, "unix:@sockasync-udp-a-%d", (int)getpid());
    snprintf(ub, sizeof ub, "unix:@sockasync-udp-b-%d", (int)getpid());
    sock *ux = udp(SOCK_ADDRESS_FAMILY_UNIX, ua, a_ep, sizeof a_ep);
    sock *uy = udp(SOCK_ADDRESS_FAMILY_UNIX, ub, b_ep, sizeof b_ep);
    CHECK(ux && uy);
    CHECK(strcmp(a_ep, ua) == 0);
    CHECK(round_trip(ux, ub, uy, ua));
    /* An unbound Unix sender has no name to report. */
    sock *anonymous = udp(SOCK_ADDRESS_FAMILY_UNIX, NULL, NULL, 0);
    CHECK(round_trip(anonymous, ub, uy, "unix:"));
    sock_free(anonymous);
    sock_free(ux);
    sock_free(uy);
}

static void test_an_ipv4_sender_shows_ipv4_mapped_on_a_dual_mode_socket(void)
{
    char v6_ep[64], v4_ep[64], expected[80];
    sock *dual = udp(V6, "[::ffff:127.0.0.1]:0", v6_ep, sizeof v6_ep);
    sock *v4 = udp(V4, "127.0.0.1:0", v4_ep, sizeof v4_ep);
    CHECK(dual && v4);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", endpoint_port(v6_ep));
    snprintf(expected, sizeof expected, "[::ffff:127.0.0.1]:%d", endpoint_port(v4_ep));
    CHECK(round_trip(v4, target, dual, expected));
    sock_free(dual);
    sock_free(v4);
}

static void test_one_args_sends_to_two_endpoints_in_turn(void)
{
    char a_ep[64], b_ep[64], c_ep[64];
    sock *a = udp(V4, "127.0.0.1:0", a_ep, sizeof a_ep);
    sock *b = udp(V4, "127.0.0.1:0", b_ep, sizeof b_ep);
    sock *c = udp(V4, "127.0.0.1:0", c_ep, sizeof c_ep);
    CHECK(a && b && c);
    waiter w;
    waiter_init(&w);
    sock_args *e = sock_args_new(on_completed, &w);
    CHECK(sock_args_set_buffer(e, "to-b", 4));
    CHECK(sock_args_set_remote_endpoint(e, b_ep));
    CHECK_EQ(complete(sock_send_to_async, a, e, &w, NULL), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK(sock_args_set_buffer(e, "to-c", 4));
    CHECK(sock_args_set_remote_endpoint(e, c_ep));
    CHECK_EQ(complete(sock_send_to_async, a, e, &w, NULL), SOCK_SOCKET_ERROR_SUCCESS);
    char in[8];
    sock *receivers[] = {b, c};
    const char *expected[] = {"to-b", "to-c"};
    for (int i = 0; i < 2; i++) {
        CHECK(sock_args_set_buffer(e, in, sizeof in));
        CHECK_EQ(complete(sock_receive_from_async, receivers[i], e, &w, NULL),
                 SOCK_SOCKET_ERROR_SUCCESS);
        CHECK_EQ(sock_args_bytes_transferred(e), 4);
        CHECK(memcmp(in, expected[i], 4) == 0);
        char from[64];
        CHECK(sock_args_remote_endpoint(e, from, sizeof from) > 0);
        CHECK(strcmp(from, a_ep) == 0);
    }
    sock_args_free(e);
    waiter_destroy(&w);
    sock_free(a);
    sock_free(b);
    sock_free(c);
}

static void test_too_large_truncated_and_peeked_datagrams(void)
{
    char a_ep[64], b_ep[64];
    sock *a = udp(V4, "127.0.0.1:0", a_ep, sizeof a_ep);
    sock *b = udp(V4, "127.0.0.1:0", b_ep, sizeof b_ep);
    CHECK(a && b);
    waiter w;
    waiter_init(&w);
    sock_args *e = sock_args_new(on_completed, &w);
    CHECK(sock_args_set_remote_endpoint(e, b_ep));

    /* Larger than any UDP datagram: MessageSize, nothing sent. */
    size_t huge = 70000;
    char *big = calloc(1, huge);
    CHECK(big != NULL);
    CHECK(sock_args_set_buffer(e, big, huge));
    CHECK_EQ(complete(sock_send_to_async, a, e, &w, NULL), SOCK_SOCKET_ERROR_MESSAGE_SIZE);
    CHECK_EQ(sock_args_bytes_transferred(e), 0);

    /* 100 bytes, then 3: the first into a 10-byte buffer is truncated, the rest lost. */
    for (int i = 0; i < 100; i++)
        big[i] = (char)('a' + i % 26);
    CHECK(sock_args_set_buffer(e, big, 100));
    CHECK_EQ(complete(sock_send_to_async, a, e, &w, NULL), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK(sock_args_set_buffer(e, "xyz", 3));
    CHECK_EQ(complete(sock_send_to_async, a, e, &w, NULL), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(sock_args_flags(e), SOCK_SOCKET_FLAGS_NONE);

    char in[10];
    CHECK(sock_args_set_buffer(e, in, sizeof in));
    CHECK(sock_args_set_flags(e, SOCK_SOCKET_FLAGS_PEEK));
    CHECK_EQ(complete(sock_receive_from_async, b, e, &w, NULL), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(sock_args_bytes_transferred(e), 10);
    CHECK_EQ(sock_args_flags(e), SOCK_SOCKET_FLAGS_TRUNCATED); /* peeked, and cut short */
    CHECK(memcmp(in, big, 10) == 0);
    /* The flags it reported go back in as they are: Truncated is ignored as input, so this
     * is a normal receive of the same (peeked) datagram. */
    memset(in, 0, sizeof in);
    CHECK_EQ(complete(sock_receive_from_async, b, e, &w, NULL), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(sock_args_bytes_transferred(e), 10);
    CHECK_EQ(sock_args_flags(e), SOCK_SOCKET_FLAGS_TRUNCATED);
    CHECK(memcmp(in, big, 10) == 0);
    CHECK(sock_args_set_flags(e, SOCK_SOCKET_FLAGS_NONE));
    CHECK_EQ(complete(sock_receive_from_async, b, e, &w, NULL), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(sock_args_bytes_transferred(e), 3); /* the next datagram: the rest was lost */
    CHECK_EQ(sock_args_flags(e), SOCK_SOCKET_FLAGS_NONE);
    CHECK(memcmp(in, "xyz", 3) == 0);
    free(big);
    sock_args_free(e);
    waiter_destroy(&w);
    sock_free(a);
    sock_free(b);
}

static void test_zero_length_datagrams_go_both_ways_with_their_sender(void)
{
    char a_ep[64], b_ep[64], from[64];
    sock *a = udp(V4, "127.0.0.1:0", a_ep, sizeof a_ep);
    sock *b = udp(V4, "127.0.0.1:0", b_ep, sizeof b_ep);
    CHECK(a && b);
    waiter w;
    waiter_init(&w);
    sock_args *e = sock_args_new(on_completed, &w);
    CHECK(sock_args_set_remote_endpoint(e, b_ep));
    CHECK_EQ(complete(sock_send_to_async, a, e, &w, NULL), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(sock_args_bytes_transferred(e), 0);
    CHECK(sock_args_set_remote_endpoint(e, NULL));
    char in[16];
    CHECK(sock_args_set_buffer(e, in, sizeof in));
    CHECK_EQ(complete(sock_receive_from_async, b, e, &w, NULL), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(sock_args_bytes_transferred(e), 0);
    CHECK_EQ(sock_args_flags(e), SOCK_SOCKET_FLAGS_NONE);
    CHECK(sock_args_remote_endpoint(e, from, sizeof from) > 0);
    CHECK(strcmp(from, a_ep) == 0);
    sock_args_free(e);
    waiter_destroy(&w);
    sock_free(a);
    sock_free(b);
}

static void test_a_buffer_list_is_one_datagram_past_iov_max(void)
{
    enum { ENTRIES = 2000, EACH = 8 };
    char a_ep[64], b_ep[64];
    sock *a = udp(V4, "127.0.0.1:0", a_ep, sizeof a_ep);
    sock *b = udp(V4, "127.0.0.1:0", b_ep, sizeof b_ep);
    CHECK(a && b);
    CHECK(sock_set_option(b, SOCK_OPTION_RECEIVE_BUFFER_SIZE, 1 << 20));
    static char out[ENTRIES][EACH], in[ENTRIES][EACH];
    static sock_buf out_list[ENTRIES], in_list[ENTRIES];
    for (int i = 0; i < ENTRIES; i++) {
        for (int j = 0; j < EACH; j++)
            out[i][j] = (char)(i * 31 + j);
        out_list[i] = (sock_buf){out[i], EACH};
        in_list[i] = (sock_buf){in[i], EACH};
    }
    waiter w;
    waiter_init(&w);
    sock_args *e = sock_args_new(on_completed, &w);
    CHECK(sock_args_set_remote_endpoint(e, b_ep));
    CHECK(sock_args_set_buffer_list(e, out_list, ENTRIES));
    CHECK_EQ(complete(sock_send_to_async, a, e, &w, NULL), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(sock_args_bytes_transferred(e), ENTRIES * EACH); /* whole, not a first batch */

    sock_args *r = sock_args_new(on_completed, &w);
    CHECK(sock_args_set_buffer_list(r, in_list, ENTRIES));
    CHECK_EQ(complete(sock_receive_from_async, b, r, &w, NULL), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK_EQ(sock_args_bytes_transferred(r), ENTRIES * EACH);
    CHECK(memcmp(in, out, sizeof in) == 0); /* scattered back in order */

    /* 9,000 entries of 8 bytes: 72,000 bytes, more than a UDP datagram holds. */
    static char one[8];
    static sock_buf too_many[9000];
    for (int i = 0; i < 9000; i++)
        too_many[i] = (sock_buf){one, sizeof one};
    CHECK(sock_args_set_buffer_list(e, too_many, 9000));
    CHECK_EQ(complete(sock_send_to_async, a, e, &w, NULL), SOCK_SOCKET_ERROR_MESSAGE_SIZE);
    CHECK_EQ(sock_args_bytes_transferred(e), 0);
    sock_args_free(e);
    sock_args_free(r);
    waiter_destroy(&w);
    sock_free(a);
    sock_free(b);
}

static void test_a_pending_datagram_receive_is_aborted_by_close(void)
{
    char ep[64];
    sock *b = udp(V4, "127.0.0.1:0", ep, sizeof ep);
    CHECK(b != NULL);
    waiter w;
    waiter_init(&w);
    sock_args *e = sock_args_new(on_completed, &w);
    char in[8];
    CHECK(sock_args_set_buffer(e, in, sizeof in));
    CHECK(sock_receive_from_async(b, e)); /* nothing sent: pending */
    sock_close(b);
    CHECK(wait_for(&w, 1));
    CHECK_EQ(w.error, SOCK_SOCKET_ERROR_OPERATION_ABORTED);
    CHECK_EQ(w.operation, SOCK_ASYNC_OPERATION_RECEIVE_FROM);
    sock_args_free(e);
    waiter_destroy(&w);
    sock_free(b);
}

static void test_peek_on_a_stream_leaves_the_data(void)
{
    sock *s;
    int peer = connected_to_raw(&s);
    CHECK(peer >= 0);
    CHECK_EQ(write(peer, "peekaboo", 8), 8);
    waiter w;
    waiter_init(&w);
    sock_args *e = sock_args_new(on_completed, &w);
    char in[4];
    CHECK(sock_args_set_buffer(e, in, sizeof in));
    CHECK(sock_args_set_flags(e, SOCK_SOCKET_FLAGS_PEEK));
    for (int i = 0; i < 2; i++) {
        CHECK_EQ(complete(sock_receive_async, s, e, &w, NULL), SOCK_SOCKET_ERROR_SUCCESS);
        CHECK_EQ(sock_args_bytes_transferred(e), 4);
        CHECK(memcmp(in, "peek", 4) == 0);
        CHECK(sock_args_set_flags(e, SOCK_SOCKET_FLAGS_PEEK)); /* completion reset them */
    }
    CHECK(sock_args_set_flags(e, SOCK_SOCKET_FLAGS_NONE));
    CHECK_EQ(complete(sock_receive_async, s, e, &w, NULL), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK(memcmp(in, "peek", 4) == 0);
    CHECK_EQ(complete(sock_receive_async, s, e, &w, NULL), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK(memcmp(in, "aboo", 4) == 0);
    sock_args_free(e);
    waiter_destroy(&w);
    sock_free(s);
    close(peer);
}

static void test_datagram_calls_reject_misuse(void)
{
    char ep[64], text[64];
    sock *u = udp(V4, NULL, NULL, 0);
    sock *u6 = udp(V6, NULL, NULL, 0);
    sock *t = sock_create(V4, SOCK_SOCKET_TYPE_STREAM, SOCK_PROTOCOL_TYPE_TCP);
    CHECK(u && u6 && t);
    waiter w;
    waiter_init(&w);
    sock_args *e = sock_args_new(on_completed, &w);
    CHECK_REJECTED(sock_send_to_async(u, e), SOCK_STATUS_INVALID_ARGUMENT); /* no endpoint */
    CHECK_REJECTED(sock_receive_from_async(u, e), SOCK_STATUS_INVALID_OPERATION); /* unbound */
    CHECK(sock_args_set_remote_endpoint(e, "[::1]:9"));
    CHECK_REJECTED(sock_send_to_async(u, e), SOCK_STATUS_NOT_SUPPORTED); /* other family */
    CHECK_REJECTED(sock_send_to_async(t, e), SOCK_STATUS_NOT_SUPPORTED); /* a stream */
    CHECK_REJECTED(sock_receive_from_async(t, e), SOCK_STATUS_NOT_SUPPORTED);
    CHECK_REJECTED(sock_send_to_async(NULL, e), SOCK_STATUS_NULL_ARGUMENT);
    CHECK_REJECTED(sock_receive_from_async(u, NULL), SOCK_STATUS_NULL_ARGUMENT);
    CHECK_EQ(sock_args_last_operation(e), SOCK_ASYNC_OPERATION_NONE); /* nothing changed */

    /* The first send-to binds the socket, so it may then receive. */
    sock *b = udp(V4, "127.0.0.1:0", ep, sizeof ep);
    CHECK(sock_args_set_remote_endpoint(e, ep));
    CHECK_EQ(complete(sock_send_to_async, u, e, &w, NULL), SOCK_SOCKET_ERROR_SUCCESS);
    CHECK(sock_local_endpoint(u, text, sizeof text) > 0);
    CHECK(endpoint_port(text) > 0);
    CHECK(sock_receive_from_async(u, e)); /* bound now: pending */
    CHECK_REJECTED(sock_args_set_flags(e, SOCK_SOCKET_FLAGS_PEEK), SOCK_STATUS_IN_PROGRESS);
    sock_close(u);
    CHECK(wait_for(&w, 1));

    CHECK_REJECTED(sock_args_set_flags(e, 8), SOCK_STATUS_INVALID_ARGUMENT);
    CHECK_REJECTED(sock_args_set_flags(e, 0x400), SOCK_STATUS_INVALID_ARGUMENT);
    CHECK_REJECTED(sock_args_set_flags(NULL, 0), SOCK_STATUS_NULL_ARGUMENT);
    CHECK_EQ(sock_args_flags(NULL), 0);
    CHECK(sock_args_set_flags(e, SOCK_SOCKET_FLAGS_PEEK | SOCK_SOCKET_FLAGS_DONT_ROUTE));
    CHECK_EQ(sock_args_flags(e), SOCK_SOCKET_FLAGS_PEEK | SOCK_SOCKET_FLAGS_DONT_ROUTE);

    /* sock_args_remote_endpoint: none yet, too small, NULL. */
    sock_args *fresh = sock_args_new(on_completed, &w);
    CHECK_EQ(sock_args_remote_endpoint(fresh, text, sizeof text), 0);
    CHECK_EQ(sock_last_status(), SOCK_STATUS_OK);
    char small[4] = "ok";
    CHECK_REJECTED(sock_args_remote_endpoint(e, small, sizeof small), SOCK_STATUS_INVALID_ARGUMENT);
    CHECK(strcmp(small, "ok") == 0);
    CHECK_REJECTED(sock_args_remote_endpoint(e, NULL, 64), SOCK_STATUS_NULL_ARGUMENT);
    CHECK_REJECTED(sock_args_remote_endpoint(NULL, text, sizeof text), SOCK_STATUS_NULL_ARGUMENT);
    CHECK(sock_args_remote_endpoint(e, text, sizeof text) == strlen(ep));
    CHECK(strcmp(text, ep) == 0);
    sock_args_free(fresh);
    sock_args_free(e);
    waiter_destroy(&w);
    sock_free(u);
    sock_free(u6);
    sock_free(t);
    sock_free(b);
}

int main(void)
{
    RUN(test_send_to_and_receive_from_over_ipv4_ipv6_and_unix);
    RUN(test_an_ipv4_sender_shows_ipv4_mapped_on_a_dual_mode_socket);
    RUN(test_one_args_sends_to_two_endpoints_in_turn);
    RUN(test_too_large_truncated_and_peeked_datagrams);
    RUN(test_zero_length_datagrams_go_both_ways_with_their_sender);
    RUN(test_a_buffer_list_is_one_datagram_past_iov_max);
    RUN(test_a_pending_datagram_receive_is_aborted_by_close);
    RUN(test_peek_on_a_stream_leaves_the_data);
    RUN(test_datagram_calls_reject_misuse);
    return h_finish("test_udp");
}

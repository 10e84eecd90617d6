#!/usr/bin/env python3
"""Writes the hand-made seed programs of the c_api fuzz target to fuzz/corpus/c_api/.

Each seed is a short program in the target's encoding (see fuzz_targets/c_api.rs: an opcode
byte, then its operand bytes). They start the fuzzer off in the states that take many
mutations to reach by chance: a connected pair, an accept handed out, sends that go pending
behind a full socket buffer, aborts by close, and the hostile-input calls.
    python3 fuzz/seeds.py
"""
import os
import struct

CREATE, BIND, LISTEN, CONNECT_OWN, CONNECT, ACCEPT, SEND = 0, 1, 2, 3, 4, 5, 6
RECEIVE, DISCONNECT, SHUTDOWN, SET_OPTION, GET_OPTION, CLOSE, FREE = 8, 10, 11, 12, 13, 14, 15
NEW_ARGS, FREE_ARGS, SET_BUFFER, SET_RANGE, SET_LIST, SET_ENDPOINT = 16, 17, 18, 19, 20, 21
SET_TOKEN, TAKE_ACCEPTED, ENDPOINTS, NAMES, AWAIT, ON_CALLBACK, RACE = range(22, 29)
SEND_TO, RECEIVE_FROM, SEND_PACKETS, SET_PACKETS, SET_FLAGS = 29, 31, 33, 34, 35
ARGS_ENDPOINT, ADOPT_PAIR, DESCRIPTOR, QUEUE = 36, 37, 38, 39

TCP4, TCP6, UNIX_STREAM, UNIX_DGRAM = 0, 3, 8, 11
LOOPBACK4, LOOPBACK6, OWN, ABSTRACT = 2, 3, 0, 13
CALLBACK_ARGS, QUEUED_ARGS = 1, 5
# Send-packets elements: memory (start, offset, count), a file range by path or by
# descriptor (offset kind 3 and count kind 2 take a u16), a missing file.
MEMORY, PATH, FD, MISSING = 0, 5, 7, 9


def u16(n):
    return list(struct.pack("<H", n))


def create(slot, kind=TCP4):
    return [CREATE, slot, kind]


def udp(slot, v6=False):
    return [CREATE, slot, 7, int(v6)]


def bind_abstract(slot, n):
    """Binds to unix:@sockasync-fuzz-<pid>-<n>."""
    return [BIND, slot, ABSTRACT, n, 1]


def bind(slot, endpoint=LOOPBACK4):
    return [BIND, slot, endpoint, 1]


def listen(slot, backlog=16):
    return [LISTEN, slot, 3, backlog]


def buffer(args, length, start=0):
    # size kind 5 = a u16 length follows; the last byte 1 = do not clear.
    return [SET_BUFFER, args, *u16(start), 5, *u16(length), 1]


def option(slot, code, value_kind, *value):
    return [SET_OPTION, slot, code + 1, value_kind, *value]


def pair(listener=0, client=1, server=2, accept_args=0, connect_args=1, family=TCP4):
    """A listener, a client connected to it, and the accepted server end."""
    endpoint = LOOPBACK4 if family == TCP4 else LOOPBACK6
    return [
        *create(listener, family), *bind(listener, endpoint), *listen(listener),
        *create(client, family),
        NEW_ARGS, accept_args, 1, NEW_ARGS, connect_args, 1,
        ACCEPT, listener, accept_args,
        CONNECT_OWN, 0, connect_args, client,
        AWAIT, connect_args, AWAIT, accept_args,
        TAKE_ACCEPTED, accept_args, server,
    ]


SEEDS = {
    # Connect, accept, send one way and receive the other.
    "echo-v4": pair() + [
        NEW_ARGS, 2, 1, *buffer(2, 4096), SEND, 1, 2,
        NEW_ARGS, 3, 1, *buffer(3, 8192), RECEIVE, 2, 3, AWAIT, 2, AWAIT, 3,
        SEND, 2, 2, RECEIVE, 1, 3,
    ],
    "echo-v6-disconnect": pair(family=TCP6) + [
        NEW_ARGS, 2, 1, *buffer(2, 100), SEND, 2, 2,
        NEW_ARGS, 3, 1, RECEIVE, 1, 3,  # zero-byte receive
        DISCONNECT, 2, 2, SHUTDOWN, 1, 1, RECEIVE, 1, 3,
    ],
    # Small socket buffers and 64 KiB sends with nobody reading: sends go pending and queue
    # behind each other, then the close aborts them.
    "pending-sends-then-close": pair() + [
        *option(1, 4, 6, *u16(4096), 0, 0), *option(2, 5, 6, *u16(4096), 0, 0),
        NEW_ARGS, 2, 1, *buffer(2, 65535), NEW_ARGS, 3, 1, *buffer(3, 65535),
        NEW_ARGS, 4, 1, *buffer(4, 65535),
        SEND, 1, 2, SEND, 1, 3, SEND, 1, 4, SEND, 1, 2,
        NEW_ARGS, 5, 1, RECEIVE, 1, 5,
        CLOSE, 1, SEND, 1, 2, RECEIVE, 1, 5, FREE_ARGS, 3,
    ],
    # Pending receives and an accept, freed while in flight, then their sockets closed.
    "free-in-flight": pair() + [
        NEW_ARGS, 2, 1, *buffer(2, 512), RECEIVE, 1, 2, FREE_ARGS, 2,
        ACCEPT, 0, 0, FREE_ARGS, 0, RECEIVE, 2, 1, SET_TOKEN, 1, 3, FREE, 2, FREE, 0,
    ],
    # Callbacks that start their receive again (3 times) and then close the socket, while
    # the other end sends.
    "callback-reissues-and-closes": pair() + [
        NEW_ARGS, 2, 1, *buffer(2, 10), ON_CALLBACK, 2, 3, 0, RECEIVE, 2, 2,
        NEW_ARGS, 3, 1, *buffer(3, 1000), SEND, 1, 3, AWAIT, 2, AWAIT, 2,
        ON_CALLBACK, 3, 3 | 4, 0, *option(1, 4, 6, *u16(4096), 0, 0), SEND, 1, 3, SEND, 1, 3,
    ],
    # Callbacks that free their socket and their own args (handed over while pending).
    "callback-frees": pair() + [
        NEW_ARGS, 2, 1, *buffer(2, 64), RECEIVE, 1, 2, ON_CALLBACK, 2, 8 | 16, 1,
        NEW_ARGS, 3, 1, *buffer(3, 10), SEND, 2, 3, AWAIT, 2,
        NEW_ARGS, 4, 1, RECEIVE, 2, 4, ON_CALLBACK, 4, 16, 0, FREE, 2,
    ],
    # Two threads on one socket: concurrent sends, a send against a receive, a setter
    # against a start on the same args, a send against a close, two closes.
    "races": pair() + [
        NEW_ARGS, 2, 1, *buffer(2, 30000), NEW_ARGS, 3, 1, *buffer(3, 30000),
        *option(1, 4, 6, *u16(4096), 0, 0),
        RACE, 1, 2, 3, 0, 0, RACE, 1, 2, 3, 0, 0, RACE, 2, 4, 5, 8, 0,
        NEW_ARGS, 4, 1, RACE, 1, 4, 4, 3, 4, RACE, 1, 2, 3, 1, 0, RACE, 2, 0, 0, 2, 0,
    ],
    # Buffer lists: valid entries, a NULL entry with a length, an empty list, a long one.
    "buffer-lists": pair() + [
        NEW_ARGS, 2, 1,
        SET_LIST, 2, 3, *u16(0), 5, *u16(1000), *u16(2000), 5, *u16(3000), *u16(9000), 5,
        *u16(7), 1,
        SET_LIST, 2, 2, *u16(0), 4, *u16(100), *u16(200), 1, 9, 1,
        SEND, 1, 2, NEW_ARGS, 3, 1,
        SET_LIST, 3, 4, *u16(0), 4, *u16(10), *u16(64), 0, *u16(128), 3, *u16(256), 4,
        *u16(4), 1,
        RECEIVE, 2, 3, SET_BUFFER, 3, 0, 0, 5, 0, 1, 1, SET_LIST, 3, 0, 1,
    ],
    # UDP: a send-to the other socket, a receive-from into a smaller buffer (Truncated), a
    # reply to the sender it reported, received with Peek.
    "udp-v4": [
        *udp(0), *bind(0), *udp(1), *bind(1),
        NEW_ARGS, 0, CALLBACK_ARGS, *buffer(0, 1000), SEND_TO, 0, 0, 0, 1,
        NEW_ARGS, 1, CALLBACK_ARGS, *buffer(1, 500), RECEIVE_FROM, 0, 1, AWAIT, 1,
        ARGS_ENDPOINT, 1, 100, 1, SEND_TO, 1, 0, 1,
        NEW_ARGS, 2, CALLBACK_ARGS, *buffer(2, 2000), SET_FLAGS, 2, 1, RECEIVE_FROM, 1, 2,
        AWAIT, 2, RECEIVE_FROM, 1, 2, AWAIT, 2, SET_FLAGS, 2, 5,
    ],
    # A connected UDP pair over IPv6, with send and receive.
    "udp-v6-connect": [
        *udp(0, True), *bind(0, LOOPBACK6), *udp(1, True), *bind(1, LOOPBACK6),
        NEW_ARGS, 0, CALLBACK_ARGS, *buffer(0, 1200), CONNECT_OWN, 0, 0, 1,
        SEND, 1, 0, NEW_ARGS, 1, CALLBACK_ARGS, *buffer(1, 4000), RECEIVE, 0, 1, AWAIT, 1,
        RECEIVE_FROM, 0, 1, SEND_TO, 0, 0, 0, 1, AWAIT, 1,
    ],
    # Unix datagrams between abstract names, with queued args.
    "unix-datagram-queued": [
        *create(0, UNIX_DGRAM), *bind_abstract(0, 0),
        *create(1, UNIX_DGRAM), *bind_abstract(1, 1),
        NEW_ARGS, 0, QUEUED_ARGS, *buffer(0, 300), NEW_ARGS, 1, QUEUED_ARGS, *buffer(1, 4000),
        RECEIVE_FROM, 0, 1, SEND_TO, 0, 0, 0, 1, QUEUE, 6, 7, 2, AWAIT, 1,
        ARGS_ENDPOINT, 1, 100, 1, SEND_TO, 1, 0, 1, RECEIVE_FROM, 1, 0, QUEUE, 6, 7, 2,
    ],
    # A Unix stream listener on an abstract name, connected and accepted with queued args,
    # then an echo, and the queue's descriptor.
    "unix-stream-queued": [
        *create(0, UNIX_STREAM), *bind_abstract(0, 2), *listen(0), *create(1, UNIX_STREAM),
        NEW_ARGS, 0, QUEUED_ARGS, NEW_ARGS, 1, QUEUED_ARGS,
        ACCEPT, 0, 0, CONNECT_OWN, 0, 1, 1, AWAIT, 1, AWAIT, 0, TAKE_ACCEPTED, 0, 2,
        NEW_ARGS, 2, CALLBACK_ARGS, *buffer(2, 4096), SEND, 1, 2,
        NEW_ARGS, 3, QUEUED_ARGS, *buffer(3, 8192), RECEIVE, 2, 3, AWAIT, 3,
        QUEUE, 4, ENDPOINTS, 2, 1, 120, 1, ENDPOINTS, 1, 0, 120, 1, RECEIVE, 1, 3,
    ],
    # Adopted socketpair ends (stream, then datagram), owned and not, and their descriptors.
    "socketpair": [
        ADOPT_PAIR, 1 | 4, 0, 1, DESCRIPTOR, 0, DESCRIPTOR, 1,
        NEW_ARGS, 0, CALLBACK_ARGS, *buffer(0, 2000), SEND, 0, 0,
        NEW_ARGS, 1, CALLBACK_ARGS, *buffer(1, 4000), RECEIVE, 1, 1, AWAIT, 1,
        ADOPT_PAIR, 8, 2, 3, SEND, 2, 0, NEW_ARGS, 2, QUEUED_ARGS, *buffer(2, 100),
        RECEIVE_FROM, 3, 2, AWAIT, 2, ADOPT_PAIR, 3, 4, 4, 0, 1, CLOSE, 3, DESCRIPTOR, 3,
    ],
    # Send-packets over a TCP pair: memory, the whole file by path, a range by descriptor,
    # an empty element; then a missing file (refused), and a range past the file's end.
    "send-packets": pair() + [
        NEW_ARGS, 2, CALLBACK_ARGS,
        SET_PACKETS, 2, 4, MEMORY, *u16(0), *u16(10), *u16(1000), PATH, 0, 0,
        FD, 3, *u16(100), 2, *u16(500), 11, 1,
        SEND_PACKETS, 1, 2,
        NEW_ARGS, 3, CALLBACK_ARGS, *buffer(3, 8192), RECEIVE, 2, 3, AWAIT, 3,
        SET_PACKETS, 2, 2, MISSING, 0, MEMORY, *u16(0), *u16(0), *u16(10), 1,
        SEND_PACKETS, 1, 2, SET_PACKETS, 2, 2, FD, 1, 2, *u16(10), PATH, 0, 0, 1,
        SEND_PACKETS, 1, 2, RECEIVE, 2, 3, SEND_PACKETS, 2, 2,
    ],
    # Hostile input: bad endpoint text, ranges past the buffer, NULL everywhere.
    "hostile": [
        *create(0), BIND, 0, 4, 0, 1, 1, BIND, 0, 5, 1, BIND, 0, 6, 1, BIND, 0, 7, 1,
        BIND, 0, 8, 3, 1, BIND, 0, 9, 1, BIND, 0, 2, 0,
        NEW_ARGS, 0, 1, NEW_ARGS, 1, 0,
        SET_ENDPOINT, 0, 1, 7, SET_ENDPOINT, 0, 1, 8, 0, SET_ENDPOINT, 0, 0, 2,
        *buffer(0, 100), SET_RANGE, 0, 2, 0, SET_RANGE, 0, 4, 4, SET_RANGE, 0, 5, 10, 0, 1, 1,
        SET_BUFFER, 0, 0, 0, 3, 1, SET_BUFFER, 0, 0, 0, 4, 1,
        CONNECT, 0, 0, CONNECT, 5, 0, CONNECT, 0, 5, SEND, 5, 5, ACCEPT, 0, 0,
        GET_OPTION, 0, 3, 0, GET_OPTION, 5, 1, 1, ENDPOINTS, 0, 0, 3, 1, ENDPOINTS, 0, 1, 40, 1,
        CLOSE, 0, SEND, 0, 0, BIND, 0, 2, 1, LISTEN, 0, 3, 1, CLOSE, 0, FREE, 0,
        SET_TOKEN, 5, 1, TAKE_ACCEPTED, 5, 0, NAMES, 0, 0x36, 0x27,
    ],
}


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "c_api")
    os.makedirs(out, exist_ok=True)
    for name, program in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(bytes(program))


if __name__ == "__main__":
    main()

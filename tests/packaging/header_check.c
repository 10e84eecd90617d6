/*
 * Compiled as C99, C11, C++11 and C++17 with -Wall -Wextra -Werror -pedantic by
 * tests/packaging/run.sh, then linked and run: linking as C++ only works if the header's
 * extern "C" guards are right, and running checks that the library is the version the
 * header says.
 */
#include <sockasync.h>

#include <stdio.h>
#include <string.h>

#define STR2(x) #x
#define STR(x) STR2(x)
#define HEADER_VERSION                                                                  \
    STR(SOCKASYNC_VERSION_MAJOR) "." STR(SOCKASYNC_VERSION_MINOR) "." STR(SOCKASYNC_VERSION_PATCH)

static void on_completed(sock *s, sock_args *e, void *token)
{
    (void)s;
    (void)e;
    (void)token;
}

int main(void)
{
    sock_completed_fn callback = on_completed;
    sock_args *e = sock_args_new(callback, NULL);
    sock_buf list[1] = {{NULL, 0}};
    int ok = e != NULL && sock_args_set_buffer_list(e, list, 1) &&
             sock_args_last_operation(e) == SOCK_ASYNC_OPERATION_NONE &&
             sock_args_socket_error(e) == SOCK_SOCKET_ERROR_SUCCESS;
    sock_args_free(e);
    if (!ok) {
        printf("args calls failed: %s\n", sock_last_error_message());
        return 1;
    }
    if (strcmp(sock_version(), HEADER_VERSION) != 0) {
        printf("library %s, header %s\n", sock_version(), HEADER_VERSION);
        return 1;
    }
    printf("%s\n", sock_version());
    return 0;
}

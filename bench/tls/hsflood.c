/* Full TLS 1.3 handshakes in a loop, each connection closed with a TCP RST.
 *
 * The load generator of bench/tls/flood.py: a C client so that the client
 * side costs less CPU than the servers it measures (Python client processes
 * cost about as much per handshake as the server). No session is ever
 * reused; the server certificate is verified against the CA given.
 *
 *   hsflood HOST PORT CAFILE SECONDS [SERVERNAME]
 *
 * Prints one line: "ok=N failed=M cpu=S" (S = this process's CPU seconds).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s HOST PORT CAFILE SECONDS [SERVERNAME]\n", argv[0]);
        return 2;
    }
    const char *name = argc > 5 ? argv[5] : "localhost";
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) return 2;
    double end = now() + atof(argv[4]);

    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF); /* never resume */
    if (SSL_CTX_load_verify_locations(ctx, argv[3], NULL) != 1) return 2;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);

    long ok = 0, failed = 0;
    struct linger rst = {.l_onoff = 1, .l_linger = 0};
    while (now() < end) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) { failed++; usleep(1000); continue; }
        struct timeval tv = {.tv_sec = 5};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &rst, sizeof rst);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
            failed++;
            close(fd);
            usleep(1000);
            continue;
        }
        SSL *ssl = SSL_new(ctx);
        SSL_set_fd(ssl, fd);
        SSL_set_tlsext_host_name(ssl, name);
        SSL_set1_host(ssl, name);
        if (SSL_connect(ssl) == 1 && SSL_version(ssl) == TLS1_3_VERSION && !SSL_session_reused(ssl))
            ok++;
        else
            failed++;
        ERR_clear_error();
        SSL_free(ssl); /* no close_notify: */
        close(fd);     /* SO_LINGER 0 makes this a RST */
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("ok=%ld failed=%ld cpu=%.3f\n", ok, failed,
           ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
    SSL_CTX_free(ctx);
    return 0;
}

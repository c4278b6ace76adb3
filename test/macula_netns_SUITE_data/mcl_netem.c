/*
 * mcl_netem: a tiny user-space stand-in for `tc qdisc ... netem`, for
 * kernels built without sch_netem (CONFIG_NET_SCH_NETEM unset).
 *
 * It runs inside a "middle" network namespace that holds two interfaces
 * without addresses, each the end of a veth pair whose other end sits in
 * a test namespace, and bridges every Ethernet frame between them through
 * AF_PACKET sockets, applying a one-way delay and a random loss rate to
 * each direction. Frames keep their GSO/checksum-offload metadata
 * (PACKET_VNET_HDR), so GSO super-packets cross unsegmented, as on a
 * plain veth pair.
 *
 * usage: mcl_netem IF1 IF2
 * Commands on standard input, one per line, each answered "ok" (or
 * "error ..."):
 *   delay MS        one-way delay added to each direction
 *   loss PCT        random loss, percent (0..100), each direction
 *   zero            sets the counters below to zero
 *   stats           prints "stats fwd N lost N overflow N queued N frags N
 *                   maxframe N": frames forwarded, dropped as loss, dropped
 *                   for a full queue, delayed; IPv4 fragments seen; the
 *                   longest frame (Ethernet header included, a GSO batch
 *                   counted whole)
 * It prints "ready" once both sockets are bound and exits at end of input.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/virtio_net.h>
#include <net/if.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE (256 * 1024)
#define QUEUE_BYTES_MAX (32u * 1024 * 1024) /* per direction: tail drop past it */

struct pkt {
    struct pkt *next;
    uint64_t release_ns;
    size_t len;
    unsigned char data[];
};

struct dir {
    int in, out;
    struct pkt *head, *tail;
    size_t queued_bytes;
};

static uint64_t delay_ns = 0;
static uint32_t loss_ppm = 0; /* parts per million */
static uint64_t n_fwd = 0, n_lost = 0, n_overflow = 0, n_queued = 0;
static uint64_t n_frags = 0, max_frame = 0;
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint32_t rnd_ppm(void) {
    /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)(((rng_state * 2685821657736338717ull) >> 32) % 1000000u);
}

static int open_if(const char *name) {
    int s = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK, htons(ETH_P_ALL));
    if (s < 0) { perror("socket(AF_PACKET)"); exit(2); }
    int one = 1;
    if (setsockopt(s, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof one) < 0) {
        perror("PACKET_VNET_HDR"); exit(2);
    }
#ifdef PACKET_IGNORE_OUTGOING
    (void)setsockopt(s, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one);
#endif
    int sz = 16 * 1024 * 1024;
    (void)setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof sz);
    (void)setsockopt(s, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof sz);
    unsigned idx = if_nametoindex(name);
    if (idx == 0) { fprintf(stderr, "no interface %s\n", name); exit(2); }
    struct sockaddr_ll sll;
    memset(&sll, 0, sizeof sll);
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = (int)idx;
    if (bind(s, (struct sockaddr *)&sll, sizeof sll) < 0) { perror("bind"); exit(2); }
    struct packet_mreq mr;
    memset(&mr, 0, sizeof mr);
    mr.mr_ifindex = (int)idx;
    mr.mr_type = PACKET_MR_PROMISC;
    (void)setsockopt(s, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof mr);
    return s;
}

static void send_frame(int out, const unsigned char *data, size_t len) {
    for (int tries = 0; tries < 1000; tries++) {
        ssize_t n = send(out, data, len, 0);
        if (n >= 0) { n_fwd++; return; }
        if (errno == EAGAIN || errno == ENOBUFS || errno == EINTR) {
            struct pollfd p = {out, POLLOUT, 0};
            (void)poll(&p, 1, 10);
            continue;
        }
        /* interface down etc.: the frame is lost, as on a real link */
        n_overflow++;
        return;
    }
    n_overflow++;
}

static void flush_due(struct dir *d, uint64_t now) {
    while (d->head && d->head->release_ns <= now) {
        struct pkt *p = d->head;
        d->head = p->next;
        if (!d->head) d->tail = NULL;
        d->queued_bytes -= p->len;
        send_frame(d->out, p->data, p->len);
        free(p);
    }
}

/* buf: virtio_net_hdr, then the Ethernet frame */
static void count_frame(const unsigned char *buf, size_t n) {
    const size_t vh = sizeof(struct virtio_net_hdr);
    if (n < vh + 14) return;
    size_t frame = n - vh;
    if (frame > max_frame) max_frame = frame;
    const unsigned char *eth = buf + vh;
    if (eth[12] == 0x08 && eth[13] == 0x00 && frame >= 14 + 20) {
        unsigned frag = ((unsigned)eth[14 + 6] << 8 | eth[14 + 7]) & 0x3fff;
        if (frag) n_frags++; /* MF set or a non-zero offset */
    }
}

static void drain(struct dir *d, unsigned char *buf) {
    for (int i = 0; i < 256; i++) {
        struct sockaddr_ll from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(d->in, buf, BUF_SIZE, 0, (struct sockaddr *)&from, &fl);
        if (n < 0) return; /* EAGAIN or a transient error */
        if (from.sll_pkttype == PACKET_OUTGOING) continue;
        count_frame(buf, (size_t)n);
        if (loss_ppm && rnd_ppm() < loss_ppm) { n_lost++; continue; }
        if (delay_ns == 0 && !d->head) { send_frame(d->out, buf, (size_t)n); continue; }
        if (d->queued_bytes + (size_t)n > QUEUE_BYTES_MAX) { n_overflow++; continue; }
        struct pkt *p = malloc(sizeof *p + (size_t)n);
        if (!p) { n_overflow++; continue; }
        p->next = NULL;
        p->release_ns = now_ns() + delay_ns;
        p->len = (size_t)n;
        memcpy(p->data, buf, (size_t)n);
        if (d->tail) d->tail->next = p; else d->head = p;
        d->tail = p;
        d->queued_bytes += (size_t)n;
        n_queued++;
    }
}

static int command(char *line) {
    double v;
    if (sscanf(line, "delay %lf", &v) == 1 && v >= 0) {
        delay_ns = (uint64_t)(v * 1e6);
    } else if (sscanf(line, "loss %lf", &v) == 1 && v >= 0 && v <= 100) {
        loss_ppm = (uint32_t)(v * 10000.0 + 0.5);
    } else if (strncmp(line, "zero", 4) == 0) {
        n_fwd = n_lost = n_overflow = n_queued = n_frags = max_frame = 0;
    } else if (strncmp(line, "stats", 5) == 0) {
        printf("stats fwd %llu lost %llu overflow %llu queued %llu frags %llu maxframe %llu\n",
               (unsigned long long)n_fwd, (unsigned long long)n_lost,
               (unsigned long long)n_overflow, (unsigned long long)n_queued,
               (unsigned long long)n_frags, (unsigned long long)max_frame);
        fflush(stdout);
        return 0;
    } else {
        printf("error bad command: %s\n", line);
        fflush(stdout);
        return 0;
    }
    printf("ok\n");
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s IF1 IF2\n", argv[0]); return 2; }
    rng_state ^= (uint64_t)now_ns() ^ ((uint64_t)getpid() << 32);
    int a = open_if(argv[1]), b = open_if(argv[2]);
    struct dir dirs[2] = {{a, b, NULL, NULL, 0}, {b, a, NULL, NULL, 0}};
    unsigned char *buf = malloc(BUF_SIZE);
    char line[256];
    size_t line_len = 0;
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        uint64_t now = now_ns();
        flush_due(&dirs[0], now);
        flush_due(&dirs[1], now);
        uint64_t timeout_ns = 1000000000ull;
        for (int i = 0; i < 2; i++) {
            if (dirs[i].head) {
                uint64_t due = dirs[i].head->release_ns;
                uint64_t left = due > now ? due - now : 0;
                if (left < timeout_ns) timeout_ns = left;
            }
        }
        struct pollfd pfd[3] = {{a, POLLIN, 0}, {b, POLLIN, 0}, {0, POLLIN, 0}};
        struct timespec ts = {(time_t)(timeout_ns / 1000000000ull),
                              (long)(timeout_ns % 1000000000ull)};
        int r = ppoll(pfd, 3, &ts, NULL);
        if (r < 0 && errno != EINTR) { perror("ppoll"); return 2; }
        if (r <= 0) continue;
        if (pfd[0].revents & POLLIN) drain(&dirs[0], buf);
        if (pfd[1].revents & POLLIN) drain(&dirs[1], buf);
        if (pfd[2].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = read(0, line + line_len, sizeof line - 1 - line_len);
            if (n <= 0) return 0; /* end of input: the test is done */
            line_len += (size_t)n;
            line[line_len] = 0;
            char *nl;
            while ((nl = strchr(line, '\n')) != NULL) {
                *nl = 0;
                command(line);
                size_t rest = line_len - (size_t)(nl + 1 - line);
                memmove(line, nl + 1, rest);
                line_len = rest;
                line[line_len] = 0;
            }
            if (line_len == sizeof line - 1) line_len = 0;
        }
    }
}

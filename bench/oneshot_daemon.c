/*
 * Benchmark reference only (never installed as a service): a minimal C server with the
 * C++ HyCAN daemon's design, so hycan can be compared with that design on this machine,
 * in the same run, instead of with numbers measured elsewhere.
 *
 * As observed of the C++ daemon (../shared/facts.md): one thread; one request per
 * connection (the client reconnects for every call); a new NETLINK_ROUTE socket per
 * operation; success is the single byte 0x01, failure `00 <code> <len u16 LE> <msg>`.
 * Only UP (2) and DOWN (3) are served; the link is addressed by name. It is leaner than
 * the original (no libnl, no link lookup, no logging), so it bounds that design's cost
 * from below.
 *
 * Usage: oneshot_daemon SOCKET_PATH   (prints "serving on ..." once it accepts)
 */
#include <errno.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

enum { OP_UP = 2, OP_DOWN = 3, CODE_BAD_FRAME = 6, CODE_NOT_FOUND = 7, CODE_DOWN = 8, CODE_UP = 9 };

/* RTM_NEWLINK changing IFF_UP of the link called `name`, on a fresh netlink socket. */
static int set_link(const char *name, int up)
{
    struct {
        struct nlmsghdr nh;
        struct ifinfomsg ifi;
        char attrs[RTA_SPACE(IFNAMSIZ)];
    } req;
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    char reply[4096];
    struct rtattr *rta = (struct rtattr *)req.attrs;
    size_t name_len = strlen(name) + 1;
    int err = 0;
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);

    if (fd < 0)
        return -errno;
    memset(&req, 0, sizeof req);
    req.nh.nlmsg_type = RTM_NEWLINK;
    req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    req.nh.nlmsg_seq = 1;
    req.ifi.ifi_family = AF_UNSPEC;
    req.ifi.ifi_change = IFF_UP;
    req.ifi.ifi_flags = up ? IFF_UP : 0;
    rta->rta_type = IFLA_IFNAME;
    rta->rta_len = RTA_LENGTH(name_len);
    memcpy(RTA_DATA(rta), name, name_len);
    req.nh.nlmsg_len = NLMSG_LENGTH(sizeof req.ifi) + RTA_ALIGN(rta->rta_len);
    if (sendto(fd, &req, req.nh.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) {
        err = -errno;
    } else {
        ssize_t n = recv(fd, reply, sizeof reply, 0);
        struct nlmsghdr *nh = (struct nlmsghdr *)reply;

        if (n < 0)
            err = -errno;
        else if (n >= (ssize_t)NLMSG_LENGTH(sizeof(struct nlmsgerr)) && nh->nlmsg_type == NLMSG_ERROR)
            err = ((struct nlmsgerr *)NLMSG_DATA(nh))->error; /* 0: acknowledged */
        else
            err = -EPROTO;
    }
    close(fd);
    return err;
}

static void answer(int conn, const unsigned char *frame, size_t len)
{
    char name[IFNAMSIZ];
    unsigned char out[4 + 256];
    const char *msg;
    int code, err;
    size_t msg_len;

    if (len < 2 || (frame[0] != OP_UP && frame[0] != OP_DOWN) || frame[1] == 0 || frame[1] >= IFNAMSIZ) {
        code = CODE_BAD_FRAME;
        msg = "bad frame";
    } else {
        memcpy(name, frame + 2, frame[1]);
        name[frame[1]] = '\0';
        err = set_link(name, frame[0] == OP_UP);
        if (err == 0) {
            (void)!write(conn, "\x01", 1);
            return;
        }
        code = err == -ENODEV ? CODE_NOT_FOUND : frame[0] == OP_UP ? CODE_UP : CODE_DOWN;
        msg = strerror(-err);
    }
    msg_len = strlen(msg) > 255 ? 255 : strlen(msg);
    out[0] = 0;
    out[1] = (unsigned char)code;
    out[2] = (unsigned char)msg_len;
    out[3] = 0;
    memcpy(out + 4, msg, msg_len);
    (void)!write(conn, out, 4 + msg_len);
}

int main(int argc, char **argv)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    unsigned char frame[2 + 255];
    int srv;

    if (argc != 2 || strlen(argv[1]) >= sizeof addr.sun_path) {
        fprintf(stderr, "usage: %s SOCKET_PATH\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    strcpy(addr.sun_path, argv[1]);
    unlink(argv[1]);
    srv = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (srv < 0 || bind(srv, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(srv, 128) < 0) {
        perror("oneshot_daemon");
        return 1;
    }
    printf("oneshot reference: serving on %s\n", argv[1]);
    fflush(stdout);
    for (;;) {
        size_t got = 0, need = 2;
        int conn = accept(srv, NULL, NULL);

        if (conn < 0)
            continue;
        while (got < need) {
            ssize_t n = read(conn, frame + got, need - got);

            if (n <= 0)
                break;
            got += (size_t)n;
            if (got == 2)
                need = 2 + frame[1];
        }
        if (got == need)
            answer(conn, frame, got);
        close(conn);
    }
}

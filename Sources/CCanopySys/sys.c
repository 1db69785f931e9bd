#define _GNU_SOURCE
#include "CCanopySys.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/ioctl.h>
#include <stdlib.h>
#include <termios.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

int canopy_pidfd_open(pid_t pid) {
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

unsigned long long canopy_process_start_time(pid_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buf[1024];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    /* The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p) return 0;
    p++;
    /* After ')' come fields 3..: state is field 3; start time is field 22, i.e. the 20th after ')'. */
    int field = 2;
    while (*p && field < 22) {
        if (*p == ' ') field++;
        p++;
    }
    unsigned long long v = 0;
    while (*p >= '0' && *p <= '9') { v = v * 10 + (unsigned long long)(*p - '0'); p++; }
    return v;
}

int canopy_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int canopy_epoll_add(int epfd, int fd) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

int canopy_epoll_del(int epfd, int fd) { return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL); }

int canopy_epoll_wait(int epfd, int *fds, int max, int timeout_ms) {
    struct epoll_event events[64];
    if (max > 64) max = 64;
    int n = epoll_wait(epfd, events, max, timeout_ms);
    for (int i = 0; i < n; i++) fds[i] = events[i].data.fd;
    return n;
}

#include <linux/openat2.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/stat.h>

#ifndef SYS_openat2
#define SYS_openat2 437
#endif

int canopy_spawn_closefrom(posix_spawn_file_actions_t *actions, int lowfd) {
    return posix_spawn_file_actions_addclosefrom_np(actions, lowfd);
}

/* Walks `path` one component at a time from `dirfd`, never following a symbolic link and never leaving the
   tree: the fallback for kernels without openat2. */
static int open_beneath_walk(int dirfd, const char *path, int flags, mode_t mode) {
    char *copy = strdup(path);
    if (!copy) { errno = ENOMEM; return -1; }
    int current = dup(dirfd);
    if (current < 0) { free(copy); return -1; }
    char *save = NULL;
    char *part = strtok_r(copy, "/", &save);
    int result = -1;
    while (part) {
        char *next = strtok_r(NULL, "/", &save);
        if (strcmp(part, "..") == 0) { errno = EXDEV; break; }
        if (strcmp(part, ".") == 0) { part = next; if (!part) { result = current; current = -1; } continue; }
        if (next) {
            int fd = openat(current, part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0) break;
            close(current);
            current = fd;
        } else {
            result = openat(current, part, flags | O_NOFOLLOW | O_CLOEXEC, mode);
        }
        part = next;
    }
    if (current >= 0) close(current);
    free(copy);
    return result;
}

int canopy_open_beneath(int dirfd, const char *path, int flags, mode_t mode) {
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = (unsigned long long)(flags | O_NOFOLLOW | O_CLOEXEC);
    how.mode = (flags & O_CREAT) ? mode : 0;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    int fd = (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    if (fd >= 0 || (errno != ENOSYS && errno != EPERM)) return fd;
    return open_beneath_walk(dirfd, path, flags, mode);
}

struct connect_job {
    const char *netns_path, *ip;
    int port, timeout_ms, result;
};

static int connect_here(const char *ip, int port, int timeout_ms) {
    struct sockaddr_storage addr;
    memset(&addr, 0, sizeof addr);
    socklen_t len;
    int family;
    if (inet_pton(AF_INET, ip, &((struct sockaddr_in *)&addr)->sin_addr) == 1) {
        family = AF_INET;
        ((struct sockaddr_in *)&addr)->sin_family = AF_INET;
        ((struct sockaddr_in *)&addr)->sin_port = htons((unsigned short)port);
        len = sizeof(struct sockaddr_in);
    } else if (inet_pton(AF_INET6, ip, &((struct sockaddr_in6 *)&addr)->sin6_addr) == 1) {
        family = AF_INET6;
        ((struct sockaddr_in6 *)&addr)->sin6_family = AF_INET6;
        ((struct sockaddr_in6 *)&addr)->sin6_port = htons((unsigned short)port);
        len = sizeof(struct sockaddr_in6);
    } else {
        return -EINVAL;
    }
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -errno;
    if (connect(fd, (struct sockaddr *)&addr, len) != 0) {
        if (errno != EINPROGRESS) { int e = errno; close(fd); return -e; }
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int n;
        do { n = poll(&p, 1, timeout_ms); } while (n < 0 && errno == EINTR);
        if (n == 0) { close(fd); return -ETIMEDOUT; }
        int err = 0;
        socklen_t elen = sizeof err;
        if (n < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0) { int e = errno; close(fd); return -e; }
        if (err != 0) { close(fd); return -err; }
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    return fd;
}

static void *connect_in_namespace(void *arg) {
    struct connect_job *job = arg;
    int ns = open(job->netns_path, O_RDONLY | O_CLOEXEC);
    if (ns < 0) { job->result = -errno; return NULL; }
    /* This thread alone enters the namespace, and ends right after. */
    if (setns(ns, CLONE_NEWNET) != 0) { job->result = -errno; close(ns); return NULL; }
    close(ns);
    job->result = connect_here(job->ip, job->port, job->timeout_ms);
    return NULL;
}

int canopy_connect_tcp(const char *netns_path, const char *ip, int port, int timeout_ms) {
    if (port < 1 || port > 65535) return -EINVAL;
    if (!netns_path) return connect_here(ip, port, timeout_ms);
    struct connect_job job = {.netns_path = netns_path, .ip = ip, .port = port, .timeout_ms = timeout_ms, .result = -EIO};
    pthread_t thread;
    int e = pthread_create(&thread, NULL, connect_in_namespace, &job);
    if (e != 0) return -e;
    pthread_join(thread, NULL);
    return job.result;
}

int canopy_open_pty(int *slave, int rows, int cols, unsigned owner) {
    int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0) return -1;
    if (grantpt(master) != 0 || unlockpt(master) != 0) { int e = errno; close(master); errno = e; return -1; }
    char name[128];
    if (ptsname_r(master, name, sizeof name) != 0) { int e = errno; close(master); errno = e; return -1; }
    int fd = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) { int e = errno; close(master); errno = e; return -1; }
    if (owner != (unsigned)-1 && fchown(fd, (uid_t)owner, (gid_t)owner) != 0) { int e = errno; close(fd); close(master); errno = e; return -1; }
    if (rows > 0 && cols > 0) {
        struct winsize size = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
        ioctl(master, TIOCSWINSZ, &size);
    }
    *slave = fd;
    return master;
}

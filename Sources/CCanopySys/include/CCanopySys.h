#ifndef CCANOPY_SYS_H
#define CCANOPY_SYS_H

#include <spawn.h>
#include <sys/types.h>

/// pidfd_open(2): a file descriptor that becomes readable when the process exits,
/// for children and non-children alike. Returns -1 and sets errno on failure.
int canopy_pidfd_open(pid_t pid);

/// Reads the start time (field 22 of /proc/PID/stat, in clock ticks since boot) of a process,
/// so a recorded pid can be told apart from a later process that reuses the number.
/// Returns 0 if the process does not exist.
unsigned long long canopy_process_start_time(pid_t pid);

/// epoll over plain file descriptors (the packed epoll_event stays on the C side).
int canopy_epoll_create(void);
/// Adds `fd` for readability.
int canopy_epoll_add(int epfd, int fd);
/// Removes `fd`.
int canopy_epoll_del(int epfd, int fd);
/// Waits for readable descriptors; fills `fds` with up to `max` of them and returns how many (-1 on error).
int canopy_epoll_wait(int epfd, int *fds, int max, int timeout_ms);

/// posix_spawn_file_actions_addclosefrom_np (glibc >= 2.34): the child closes every descriptor from `lowfd` up.
int canopy_spawn_closefrom(posix_spawn_file_actions_t *actions, int lowfd);

/// Opens `path` relative to `dirfd` without following any symbolic link and without leaving the tree below
/// `dirfd` (no `..`, no absolute path): openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, or a walk of
/// O_NOFOLLOW opens, one component at a time, where openat2 is missing. O_NOFOLLOW and O_CLOEXEC are always added.
/// Returns -1 and sets errno (ELOOP for a link, EXDEV for an escape) on failure.
int canopy_open_beneath(int dirfd, const char *path, int flags, mode_t mode);

/// A TCP connection to `ip` (numeric IPv4 or IPv6) port `port`, made in the network namespace of `netns_path`
/// (`/proc/PID/ns/net`) when it is not NULL, else in the caller's. The namespace is entered on a short-lived
/// thread of its own, so no other thread of the server changes namespace. Connecting waits at most
/// `timeout_ms`. Returns the connected descriptor (blocking, close-on-exec), or -errno.
int canopy_connect_tcp(const char *netns_path, const char *ip, int port, int timeout_ms);

/* Opens a pseudo-terminal: returns its master (close-on-exec) and sets *slave to its slave (close-on-exec, owned by
   `owner` when that is not (uid_t)-1), sized rows x cols when both are positive; -1 with errno on failure. */
int canopy_open_pty(int *slave, int rows, int cols, unsigned owner);

#endif

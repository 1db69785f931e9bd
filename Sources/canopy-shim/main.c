/*
 * canopy-shim: the supervisor of one Canopy task.
 *
 * The server starts it with posix_spawn (fast: no copy of the server's address space), with
 * stdout/stderr already pointing at the task's log files. The shim
 *   1. starts a new session, so the task's process group can be signalled as a whole;
 *   2. moves itself into the task's cgroups (so the command cannot escape them by forking early);
 *   3. forks the command, which drops to the unprivileged user and changes to its working directory;
 *   4. waits for it and records "exit N" or "signal N" in the exit file (atomically, by rename),
 *      so the status survives a restart of the server, which may no longer be the shim's parent.
 * The server signals the whole process group (shim and command). The shim survives SIGTERM, SIGINT and
 * SIGHUP through a handler (a handler, not SIG_IGN: an ignored disposition would be inherited by the command,
 * a handler is reset by exec), so it is still there to record how the command ended. Only SIGKILL ends the
 * shim first; the server then takes the exit status from waitpid.
 *
 * A stop may come at any moment, even right after the spawn, before the command exists. The shim starts
 * with those signals blocked (the server spawns it so; it blocks them again itself), forks, and only then
 * looks: a signal that arrived before the fork is pending in the shim alone and is passed on to the command;
 * one that arrives later reaches the command through the process group. The command unblocks them after
 * resetting their dispositions, so nothing is lost in between.
 *
 * Before anything else the shim closes every descriptor above 2 (close_range), so nothing the server had open
 * (its listening socket, clients' connections, the database) can reach a task, whatever the spawner passed.
 *
 * With --private-tmp DIR (the server passes it when it runs as root), the command gets a mount namespace of its own
 * in which DIR (the task's, private to its uid) is /tmp and /var/tmp, fresh tmpfs are /dev/shm and /run/lock, and
 * /proc shows only the task's own processes (hidepid), plus an IPC namespace of its own, so tasks of different
 * tenants share no scratch space and see nothing of each other: nothing one leaves in /tmp can be read or replaced
 * by another, and no command line of another task can be read. Where
 * the kernel refuses a mount namespace the task still runs, with the host's /tmp, and the shim says so on stderr.
 *
 * With --hide-device PATH (repeatable; a GPU's /dev/nvidiaN that the task was not given), that device is covered in
 * the task's mount namespace by an empty root-owned file of mode 0: opening it fails with EACCES, as with a device
 * cgroup's refusal, so a task that ignores CUDA_VISIBLE_DEVICES still cannot use another task's GPU. This needs the
 * mount namespace of --private-tmp; without one, a task with devices to hide is not run at all (exit 126).
 *
 * usage: canopy-shim [--hold-lock] --exit-file F [--cgroup DIR]... [--uid N --gid N] [--chdir DIR] [--private-tmp DIR]
 *                    [--hide-device PATH]... [--env K=V]...
 *                    -- CMD [ARGS...]
 *        canopy-shim --kill-uid N
 *        canopy-shim --exec-into PID [--tty] [--cgroup DIR]... [--uid N --gid N] [--chdir DIR] -- CMD [ARGS...]
 *   The second form kills every process of user N (which must not be 0): it becomes that user and sends SIGKILL
 *   to all it may signal (kill(-1)), until none is left. The server uses it when a task with its own identity
 *   ends, so that nothing the task left behind (a daemon started with setsid, say) outlives it.
 *   The third form runs a command inside a running task (canopy exec): it joins the mount and IPC namespaces of
 *   the task's command PID (so it sees the task's private /tmp and hidden GPUs, not the host's), the task's cgroups
 *   (so it counts against the task's limits and dies with it), changes to the task's working directory and becomes
 *   the task's user, then execs CMD in place: no supervisor stays, and the server waits for CMD itself. With --tty,
 *   descriptor 0 is the slave of a pseudo-terminal the server holds, which becomes the controlling terminal of the
 *   command's new session.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static void ignore_signal(int sig) { (void)sig; }

static void die(const char *what) {
    fprintf(stderr, "canopy-shim: %s: %s\n", what, strerror(errno));
    exit(125);
}

static int write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = write(fd, text, strlen(text));
    int saved = errno;
    close(fd);
    errno = saved;
    return n < 0 ? -1 : 0;
}

static void record(const char *exit_file, const char *text) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", exit_file);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return;
    if (write(fd, text, strlen(text)) < 0) { close(fd); return; }
    fsync(fd);
    close(fd);
    rename(tmp, exit_file);
}

/* Closes every descriptor from `low` up. */
static void close_inherited(unsigned low) {
#ifdef SYS_close_range
    if (syscall(SYS_close_range, low, ~0U, 0U) == 0) return;
#endif
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > 1048576) max = 1048576;
    for (long fd = low; fd < max; fd++) close((int)fd);
}

static int under(const char *path, const char *prefix) {
    size_t n = strlen(prefix);
    return strncmp(path, prefix, n) == 0 && (path[n] == '/' || path[n] == 0);
}

/* A mount namespace of the command's own with private /tmp, /var/tmp and /dev/shm; 0, or -1 if the kernel refused.
   A working directory below /tmp or /var/tmp (a data dir there) is first mounted at its own path inside the
   private directory, so the task still reaches it by its full path once the host's /tmp is covered. */
static int private_tmp(const char *dir, const char *workdir) {
    /* System V IPC of its own too: shared memory and queues are neither seen by other tasks nor left behind. */
    if (unshare(CLONE_NEWNS | CLONE_NEWIPC) != 0 && unshare(CLONE_NEWNS) != 0) return -1;
    /* Nothing mounted here propagates back to the host. */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) return -1;
    const char *covered[] = {"/tmp", "/var/tmp"};
    for (int c = 0; c < 2 && workdir; c++) {
        if (!under(workdir, covered[c])) continue;
        char inner[4096];
        if (snprintf(inner, sizeof inner, "%s%s", dir, workdir + strlen(covered[c])) >= (int)sizeof inner) return -1;
        for (char *p = inner + strlen(dir) + 1; *p; p++) {
            if (*p != '/') continue;
            *p = 0;
            mkdir(inner, 0711);
            *p = '/';
        }
        mkdir(inner, 0711);
        if (mount(workdir, inner, NULL, MS_BIND, NULL) != 0) return -1;
        break;
    }
    /* By descriptor (opened in this namespace), so covering one directory cannot hide `dir` from the next mount. */
    int fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    char source[64];
    snprintf(source, sizeof source, "/proc/self/fd/%d", fd);
    struct stat st;
    int ok = mount(source, "/tmp", NULL, MS_BIND | MS_REC, NULL) == 0;
    if (ok && stat("/var/tmp", &st) == 0 && S_ISDIR(st.st_mode)) ok = mount(source, "/var/tmp", NULL, MS_BIND | MS_REC, NULL) == 0;
    close(fd);
    if (!ok) return -1;
    if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && !(workdir && under(workdir, "/dev/shm")))
        mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    /* The other world-writable directory a task could leave things in (also /var/lock). */
    if (stat("/run/lock", &st) == 0 && S_ISDIR(st.st_mode) && !(workdir && under(workdir, "/run/lock")))
        mount("tmpfs", "/run/lock", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777");
    /* A /proc that shows the task only its own processes: no other task's command line, status or shim. */
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=invisible") != 0)
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2");
    return 0;
}

/* Covers each device in `paths` with an empty root-owned file of mode 0, made in the namespace's own fresh tmpfs
   (/dev/shm) and unlinked once bound, so nothing of it is left for the task to find; 0, or -1 with errno. A path
   that does not exist (fewer devices than GPUs) is skipped. Runs as root, in the task's mount namespace. */
static int hide_devices(char **paths, int n) {
    if (n == 0) return 0;
    char blank[] = "/dev/shm/.canopy-hidden-XXXXXX";
    int fd = mkstemp(blank);
    if (fd < 0) return -1;
    fchmod(fd, 0);
    close(fd);
    int failed = 0;
    for (int i = 0; i < n && !failed; i++) {
        struct stat st;
        if (lstat(paths[i], &st) != 0) continue;
        if (mount(blank, paths[i], NULL, MS_BIND, NULL) != 0) failed = errno;
    }
    unlink(blank);
    if (failed) { errno = failed; return -1; }
    return 0;
}

/* The shim itself runs with the fixed environment the server gives it (a task's LD_PRELOAD or GLIBC_TUNABLES must
   never reach a process running as root, the dynamic loader included); the task's own environment, from --env, is
   put in place only here, after the drop to the task's user, for the command and its PATH lookup. */
static void apply_env(char **env) {
    clearenv();
    for (int k = 0; env[k]; k++) putenv(env[k]);
}

/* Joins namespace `kind` ("mnt", "ipc") of `pid` when it differs from ours; 0, or -1 with errno. */
static int join_namespace(long pid, const char *kind, int flag) {
    char theirs[64], ours[64];
    snprintf(theirs, sizeof theirs, "/proc/%ld/ns/%s", pid, kind);
    snprintf(ours, sizeof ours, "/proc/self/ns/%s", kind);
    struct stat a, b;
    if (stat(theirs, &a) != 0) return -1;
    if (stat(ours, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev) return 0;
    int fd = open(theirs, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = setns(fd, flag);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

/* Moves this process into the given cgroups (their cgroup.procs). */
static void join_cgroups(const char **cgroups, int ncgroups) {
    char pidtext[32];
    snprintf(pidtext, sizeof pidtext, "%d", (int)getpid());
    for (int c = 0; c < ncgroups; c++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/cgroup.procs", cgroups[c]);
        if (write_file(path, pidtext) != 0) die(path);
    }
}

/* The last steps of every command the shim runs: its working directory (while still privileged: the task user may
   not traverse the data directory's ancestors), the task's user, the task's environment, then the command. Returns
   only when the command could not run: the exit status to report (127 not found, 126 otherwise). */
static int become_and_exec(const char *chdir_to, long uid, long gid, char **env, char **command) {
    if (chdir_to && chdir(chdir_to) != 0) die(chdir_to);
    if (gid >= 0) {
        if (setgroups(0, NULL) != 0) die("setgroups");
        if (setgid((gid_t)gid) != 0) die("setgid");
    }
    if (uid >= 0 && setuid((uid_t)uid) != 0) die("setuid");
    apply_env(env);
    execvp(command[0], command);
    int failure = errno;
    if (failure == ENOENT && !strchr(command[0], '/')) {
        const char *path = getenv("PATH");
        fprintf(stderr, "canopy: cannot run %s: not found in PATH=%s\n", command[0], path ? path : "");
    } else {
        fprintf(stderr, "canopy: cannot run %s: %s\n", command[0], failure == ENOENT ? "no such file" : strerror(failure));
    }
    return failure == ENOENT ? 127 : 126;
}

static int exec_into(long target, int tty, const char **cgroups, int ncgroups, long uid, long gid, const char *chdir_to, char **env, char **command) {
    if (getpgrp() != getpid()) setsid();
    join_cgroups(cgroups, ncgroups);
    /* The task's own view of the file system (its /tmp, its hidden devices) and its System V IPC. */
    if (target > 0) {
        if (join_namespace(target, "ipc", CLONE_NEWIPC) != 0) die("the task's IPC namespace");
        if (join_namespace(target, "mnt", CLONE_NEWNS) != 0) die("the task's mount namespace");
    }
    if (tty && ioctl(0, TIOCSCTTY, 0) != 0) die("the terminal");
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    umask(022);
    return become_and_exec(chdir_to, uid, gid, env, command);
}

/* Covers `target` (/etc/passwd, /etc/group) in the task's mount namespace with a copy that has `line` appended, so
   that the task's uid has a name, a home and a shell (getpwuid works: shells, ssh's scp, pip, git). The copy is made
   in the namespace's fresh /dev/shm, root-owned and 0644, bound over the original and unlinked. Best effort. */
static void add_account(const char *target, const char *line) {
    char copy[] = "/dev/shm/.canopy-account-XXXXXX";
    int out = mkstemp(copy);
    if (out < 0) return;
    int in = open(target, O_RDONLY | O_CLOEXEC);
    char buffer[65536];
    ssize_t n;
    int last = '\n';
    while (in >= 0 && (n = read(in, buffer, sizeof buffer)) > 0) {
        if (write(out, buffer, (size_t)n) != n) break;
        last = buffer[n - 1];
    }
    if (in >= 0) close(in);
    if (last != '\n' && write(out, "\n", 1) != 1) { /* best effort */ }
    if (write(out, line, strlen(line)) < 0) { /* best effort */ }
    fchmod(out, 0644);
    close(out);
    mount(copy, target, NULL, MS_BIND, NULL);
    unlink(copy);
}

static int kill_user(long uid) {
    if (uid <= 0) { fprintf(stderr, "canopy-shim: --kill-uid needs a user other than root\n"); return 125; }
    if (setgroups(0, NULL) != 0 || setgid((gid_t)uid) != 0 || setuid((uid_t)uid) != 0) die("setuid");
    /* kill(-1) signals every process this user may signal but the caller; a process forked meanwhile is
       caught by the next round. ESRCH: nothing left. */
    for (int round = 0; round < 1000; round++) {
        if (kill(-1, SIGKILL) != 0) return errno == ESRCH ? 0 : 1;
        usleep(1000);
    }
    return 1;
}

int main(int argc, char **argv) {
    /* --hold-lock: descriptor 3 is the task's uid lock (an flock), held by the shim for the task's life; the
       command does not get it (close-on-exec). Everything else above 2 goes. */
    int hold_lock = argc > 1 && strcmp(argv[1], "--hold-lock") == 0;
    close_inherited(hold_lock ? 4 : 3);
    if (hold_lock) {
        if (fcntl(3, F_SETFD, FD_CLOEXEC) != 0) die("the uid lock (descriptor 3)");
        argv++;
        argc--;
    }
    if (argc == 3 && strcmp(argv[1], "--kill-uid") == 0) return kill_user(strtol(argv[2], NULL, 10));
    const char *exit_file = NULL, *chdir_to = NULL, *tmp_dir = NULL;
    const char *cgroups[16];
    int ncgroups = 0;
    char *hidden[64];
    int nhidden = 0;
    long uid = -1, gid = -1, exec_target = -1;
    int tty = 0;
    /* The task's environment, applied only once the command runs as the task's user (see apply_env). */
    char **task_env = calloc((size_t)argc + 1, sizeof(char *));
    int nenv = 0;
    if (!task_env) die("calloc");
    int i = 1;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) { i++; break; }
        if (strcmp(argv[i], "--tty") == 0) { tty = 1; continue; }
        if (i + 1 >= argc) { fprintf(stderr, "canopy-shim: %s needs a value\n", argv[i]); return 125; }
        if (strcmp(argv[i], "--exit-file") == 0) exit_file = argv[++i];
        else if (strcmp(argv[i], "--cgroup") == 0 && ncgroups < 16) cgroups[ncgroups++] = argv[++i];
        else if (strcmp(argv[i], "--uid") == 0) uid = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--gid") == 0) gid = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--chdir") == 0) chdir_to = argv[++i];
        else if (strcmp(argv[i], "--private-tmp") == 0) tmp_dir = argv[++i];
        else if (strcmp(argv[i], "--hide-device") == 0 && nhidden < 64) hidden[nhidden++] = argv[++i];
        else if (strcmp(argv[i], "--exec-into") == 0) exec_target = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--env") == 0) task_env[nenv++] = argv[++i];
        else { fprintf(stderr, "canopy-shim: unknown option %s\n", argv[i]); return 125; }
    }
    if (exec_target >= 0 && i < argc) return exec_into(exec_target, tty, cgroups, ncgroups, uid, gid, chdir_to, task_env, &argv[i]);
    if (!exit_file || i >= argc) {
        fprintf(stderr, "usage: canopy-shim --exit-file F [--cgroup DIR]... [--uid N --gid N] [--chdir DIR] -- CMD [ARGS...]\n");
        return 125;
    }
    char **command = &argv[i];

    if (getpgrp() != getpid()) setsid();

    join_cgroups(cgroups, ncgroups);

    sigset_t stops, previous;
    sigemptyset(&stops);
    sigaddset(&stops, SIGTERM);
    sigaddset(&stops, SIGINT);
    sigaddset(&stops, SIGHUP);
    sigprocmask(SIG_BLOCK, &stops, &previous);
    sigdelset(&previous, SIGTERM);
    sigdelset(&previous, SIGINT);
    sigdelset(&previous, SIGHUP);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = ignore_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);

    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        sigprocmask(SIG_SETMASK, &previous, NULL);
        /* The server keeps its own files private (umask 077); the task gets the usual default. */
        umask(022);
        /* Change directory while still privileged: the task user owns its working directory but may not be
           able to traverse the data directory's ancestors (e.g. /root is 0700). */
        int isolated = tmp_dir && private_tmp(tmp_dir, chdir_to) == 0;
        if (tmp_dir && !isolated)
            fprintf(stderr, "canopy-shim: no private /tmp for this task (%s); it shares the host's\n", strerror(errno));
        if (nhidden > 0 && (!isolated || hide_devices(hidden, nhidden) != 0)) {
            fprintf(stderr, "canopy: cannot hide the GPUs this task was not given (%s); not running it\n",
                    isolated ? strerror(errno) : "no mount namespace");
            _exit(126);
        }
        /* A name for the task's uid (it has no entry in the host's files), with the working directory as its home. */
        if (isolated && uid > 0) {
            char line[4600];
            const char *shell = access("/bin/bash", X_OK) == 0 ? "/bin/bash" : "/bin/sh";
            snprintf(line, sizeof line, "task-%ld:x:%ld:%ld:Canopy task:%s:%s\n", uid, uid, gid >= 0 ? gid : uid, chdir_to ? chdir_to : "/", shell);
            add_account("/etc/passwd", line);
            snprintf(line, sizeof line, "task-%ld:x:%ld:\n", gid >= 0 ? gid : uid, gid >= 0 ? gid : uid);
            add_account("/etc/group", line);
        }
        _exit(become_and_exec(chdir_to, uid, gid, task_env, command));
    }

    /* Stops that came before the command existed: pass them on, then let later ones reach the handler. */
    sigset_t pending;
    sigemptyset(&pending);
    sigpending(&pending);
    int forwarded[] = {SIGTERM, SIGINT, SIGHUP};
    for (int s = 0; s < 3; s++)
        if (sigismember(&pending, forwarded[s])) kill(pid, forwarded[s]);
    sigprocmask(SIG_SETMASK, &previous, NULL);

    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) die("waitpid");
    }
    char text[64];
    int code;
    if (WIFEXITED(status)) {
        code = WEXITSTATUS(status);
        snprintf(text, sizeof text, "exit %d\n", code);
    } else {
        code = 128 + WTERMSIG(status);
        snprintf(text, sizeof text, "signal %d\n", WTERMSIG(status));
    }
    record(exit_file, text);
    return code;
}

#if canImport(Glibc)
import Glibc
#endif
import CCanopySys
import CanopyCore

/// Starts processes with posix_spawn: no copy of the server's address space and no polling wait.
package enum Spawner {
    /// Spawns `argv` in a new session with stdin from /dev/null, stdout/stderr appended to the given files, no other descriptor,
    /// signal dispositions reset (the server ignores SIGPIPE; its tasks must not inherit that) and the stop signals blocked.
    /// With `keep`, that descriptor becomes the child's descriptor 3 (the shim holds a task's uid lock there).
    package static func spawn(path: String, argv: [String], env: [String], stdout: String, stderr: String, keep: Int32? = nil) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        // Nothing the server has open (its listening socket, clients' connections, the database) reaches the child;
        // the shim closes everything above 2 again itself, for spawners that cannot do this.
        if let keep { posix_spawn_file_actions_adddup2(&actions, keep, 3) }
        canopy_spawn_closefrom(&actions, keep == nil ? 3 : 4)
        // The shim starts with the stop signals blocked, so one sent right after the spawn is held until the shim
        // can pass it on to its command (see canopy-shim's source); everything else is unblocked.
        return try start(path: path, argv: argv, env: env, actions: &actions, blocked: [SIGTERM, SIGINT, SIGHUP])
    }

    /// Spawns `argv` in a new session with descriptors 0, 1 and 2 taken from `stdio` (the caller's descriptors,
    /// which it keeps and closes), no other descriptor, and signal dispositions reset; for an exec into a task.
    package static func spawn(path: String, argv: [String], env: [String], stdio: [Int32]) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (target, fd) in stdio.prefix(3).enumerated() { posix_spawn_file_actions_adddup2(&actions, fd, Int32(target)) }
        canopy_spawn_closefrom(&actions, 3)
        return try start(path: path, argv: argv, env: env, actions: &actions, blocked: [])
    }

    /// posix_spawn in a new session (POSIX_SPAWN_SETSID, glibc >= 2.26) with the file actions given, `blocked`
    /// signals blocked and every other unblocked, and the dispositions the server changed (it ignores SIGPIPE) reset.
    private static func start(path: String, argv: [String], env: [String], actions: inout posix_spawn_file_actions_t, blocked: [Int32]) throws -> pid_t {
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var mask = sigset_t()
        sigemptyset(&mask)
        for sig in blocked { sigaddset(&mask, sig) }
        posix_spawnattr_setsigmask(&attr, &mask)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for sig in [SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD, SIGQUIT, SIGUSR1, SIGUSR2] { sigaddset(&defaults, sig) }
        posix_spawnattr_setsigdefault(&attr, &defaults)
        let setsid: Int32 = 0x80
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | setsid))
        var cArgs = argv.map { strdup($0) } + [nil]
        var cEnv = env.map { strdup($0) } + [nil]
        defer {
            for p in cArgs { free(p) }
            for p in cEnv { free(p) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, &attr, &cArgs, &cEnv)
        guard rc == 0 else {
            throw CanopyError(.internal, "cannot start \(path): \(String(cString: strerror(rc)))")
        }
        return pid
    }
}

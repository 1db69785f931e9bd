import CCanopySys
import CanopyCore
import CanopyHost
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Interactive workloads on Slurm: commands run inside a running task (`canopy exec`, SSH), connections to the
/// ports its tasks serve (the proxy, `ssh -L`), and the lease as the job's time limit.
///
/// - Exec: `srun --jobid=J --overlap` starts a step of the task's own job on the task's node, as the job's account,
///   running `exec.sh` (written at submit) with the command: it gets the task's environment, working directory and
///   ports, and for an image the same image in a sandbox of its own. With a terminal, `srun --pty`.
/// - Ports: a task picks a free port of its node for each declared one and writes them, with its node, into its
///   directory (see `SlurmText.batchScript`); Canopy connects to that node's address (`scontrol show node`) and
///   that port. Where the node is this host, only a listener of the job's own account is connected to, as with
///   processes; on another node Canopy cannot see who listens, and the task's word stands (see the README).
/// - Leases: `scontrol update JobId=J TimeLimit=M` when a lease changes (as root, or an operator: Slurm lets users
///   only shorten their jobs).
extension SlurmExecutor: TaskExecRunner, TaskPortConnector, TimeLimitedRuntime {
    /// The job of a workload, when Canopy follows it and it has started.
    private func startedJob(_ workloadID: String, handle: String, task: Int) throws -> Track {
        guard let t = tracks[handle], t.workloadID == workloadID, t.started else {
            throw CanopyError(.unavailable, "Slurm job \(handle) of workload \(workloadID) is not running")
        }
        guard (0..<t.tasks).contains(task) else { throw CanopyError(.notFound, "workload \(workloadID) has no task \(task)", field: "task") }
        return t
    }

    /// The node a task said it runs on (`task-N/node`, written by the task as it starts), when it is one of its
    /// job's allocation: the task's word is taken for which of them, never for another host.
    private func node(of layout: TaskLayout, task: Int, job: Track) throws -> String {
        let text = layout.readSmall("node", limit: 256)?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        guard SlurmText.isNodeName(text) else { throw CanopyError(.unavailable, "task \(task) has not started on its node yet; try again") }
        guard job.nodes.contains(text) else {
            throw CanopyError(.unavailable, "task \(task) names node \(text), which is not in its job's allocation (\(job.nodes.joined(separator: ",")))")
        }
        return text
    }

    /// The account the workload's job runs as, which its commands run as too: the owner of its directory; nil
    /// when the server is not root (its jobs then run as the server's own user). Never root.
    private nonisolated func jobAccount(_ workloadID: String) throws -> (uid: uid_t, gid: gid_t)? {
        var st = stat()
        guard lstat(config.workloadsRoot + "/" + workloadID, &st) == 0 else {
            throw CanopyError(.unavailable, "workload \(workloadID) has no directory here")
        }
        guard geteuid() == 0 else { return nil }
        guard st.st_uid != 0 else { throw CanopyError(.unavailable, "workload \(workloadID)'s job runs as root; Canopy runs nothing in it") }
        return (st.st_uid, st.st_gid)
    }

    // MARK: exec

    /// Starts `request` in a task as a step of its job (`srun --overlap`), on the task's node, as the job's account.
    public func exec(workloadID: String, taskIndex: Int, handle: String, request: ExecRequest) async throws -> any ExecSession {
        let job = try startedJob(workloadID, handle: handle, task: taskIndex)
        guard !request.command.isEmpty else { throw CanopyError.invalid("command", "give a command to run") }
        let directory = config.workloadsRoot + "/" + workloadID
        let layout = TaskLayout(root: config.workloadsRoot, workloadID: workloadID, index: taskIndex)
        guard let workdir = layout.resolve(workdir: request.workdir) else {
            throw CanopyError.invalid("workdir", "the workload's workdir leaves the task's directory")
        }
        guard FileManager.default.fileExists(atPath: directory + "/exec.sh") else {
            throw CanopyError(.conflict, "workload \(workloadID) was submitted by a Canopy without exec on Slurm; restart it to exec into it")
        }
        let node = try node(of: layout, task: taskIndex, job: job)
        let account = try jobAccount(workloadID)
        let path = command.environment["PATH"] ?? ""
        guard let srun = TaskUser.findProgram("srun", path: path) else { throw CanopyError(.unavailable, "srun is not on PATH (\(path))") }
        let sub = workdir.count > layout.work.count ? String(workdir.dropFirst(layout.work.count)) : ""
        var argv = [
            srun, "--jobid=\(handle)", "--overlap", "--nodes=1", "--ntasks=1", "--nodelist=\(node)", "--quiet", "--chdir=/", "--job-name=canopy-exec",
        ]
        if request.tty { argv.append("--pty") }
        argv += ["/bin/sh", directory + "/exec.sh", directory, String(taskIndex), sub] + request.command
        var program = srun
        if let account {
            guard let setpriv = TaskUser.findProgram("setpriv", path: path + ":/usr/bin:/bin") else {
                throw CanopyError(.unavailable, "setpriv is not on PATH; Canopy runs nothing in a job as root")
            }
            argv = [setpriv, "--reuid=\(account.uid)", "--regid=\(account.gid)", "--init-groups"] + argv
            program = setpriv
        }
        var env = command.environment.map { "\($0.key)=\($0.value)" }
        if request.tty { env.append("TERM=xterm-256color") }

        // srun carries the terminal's size to the step when it gets SIGWINCH; its terminal is not its controlling
        // one (it runs in a session of its own), so it is told directly.
        let reaped = Reaped()
        let (session, pid) = try DescriptorExecSession.spawn(
            path: program, argv: argv, env: env, tty: request.tty, rows: request.rows, columns: request.columns, ptyOwner: account?.uid ?? UInt32.max,
            resizer: { master, pid in
                { rows, columns in
                    var ws = winsize(ws_row: UInt16(rows), ws_col: UInt16(columns), ws_xpixel: 0, ws_ypixel: 0)
                    _ = ioctl(master, UInt(TIOCSWINSZ), &ws)
                    reaped.signal(pid, SIGWINCH)
                }
            }
        ) { pid in { await Self.end(pid, reaped) } }
        let thread = Thread {
            var status: Int32 = 0
            // Waited for without reaping, then reaped under the lock: end() never signals the pid once another
            // process may have it.
            var info = siginfo_t()
            while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) < 0 && errno == EINTR {}
            reaped.withLock { done in
                while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
                done = true
            }
            // srun exits with the step's exit code, or 128 + the signal that ended its task.
            session.ended((status & 0x7f) == 0 ? Int((status >> 8) & 0xff) : 128 + Int(status & 0x7f))
        }
        thread.name = "canopy-srun-wait"
        thread.start()
        return session
    }

    /// Ends an exec's srun: SIGTERM, which srun passes on to the step's processes, then SIGKILL a second later;
    /// never once it has been reaped (its pid may be another process's by then).
    private static func end(_ pid: pid_t, _ reaped: Reaped) async {
        reaped.signal(pid, SIGTERM)
        try? await Task.sleep(for: .seconds(1))
        reaped.signal(pid, SIGKILL)
    }

    /// Whether an exec's srun was reaped; signals go to it only while it was not.
    final class Reaped: Sendable {
        private let done = Mutex(false)
        func withLock(_ body: (inout Bool) -> Void) { done.withLock { body(&$0) } }
        func signal(_ pid: pid_t, _ sig: Int32) { done.withLock { if !$0 { kill(pid, sig) } } }
    }

    // MARK: ports

    /// A connection to `port` of a running task: the port its node gave it, on the node's address.
    public func connect(workloadID: String, taskIndex: Int, handle: String, port: Int) async throws -> Int32 {
        let job = try startedJob(workloadID, handle: handle, task: taskIndex)
        let layout = TaskLayout(root: config.workloadsRoot, workloadID: workloadID, index: taskIndex)
        let text = layout.readSmall("ports") ?? ""
        guard let actual = SlurmText.portMap(text)[port] else {
            throw CanopyError(.unavailable, "task \(taskIndex) has not been given a port for \(port) on its node (yet?)")
        }
        let node = try node(of: layout, task: taskIndex, job: job)
        let account = try jobAccount(workloadID)
        let address = try await address(of: node)
        return try await Blocking.run { () throws -> Int32 in
            var target = address
            if HostAddresses.isThisHost(address) {
                // A port of this host: only a listener of the job's account, on loopback or every address, open in
                // one of its processes.
                guard let own = ListeningSockets.owned(port: actual, by: account?.uid ?? geteuid(), held: account != nil).own else {
                    throw CanopyError(.unavailable, "nothing of task \(taskIndex) listens on port \(actual) of node \(node) (for \(port)) yet")
                }
                target = own.connectAddress
            }
            let fd = canopy_connect_tcp(nil, target, Int32(actual), 5000)
            guard fd >= 0 else {
                throw CanopyError(.unavailable, "cannot connect to port \(actual) of node \(node) (task \(taskIndex)'s \(port)): \(String(cString: strerror(-fd)))")
            }
            return fd
        }
    }

    /// A node's address, numeric: its `NodeAddr` (`scontrol show node`), resolved; remembered.
    private func address(of node: String) async throws -> String {
        if let known = nodeAddresses[node] { return known }
        // Slurm's own word for the node's address (an admin's NodeAddr, or its name), never the task's.
        let r = try await command.run(["scontrol", "show", "node", "-o", node])
        guard r.ok, let field = String(decoding: r.stdout, as: UTF8.self).split(separator: " ").first(where: { $0.hasPrefix("NodeAddr=") }) else {
            throw CanopyError(.unavailable, "Slurm does not say where node \(node) is: \(SlurmText.complaint(r.stderr))")
        }
        let name = String(field.dropFirst("NodeAddr=".count))
        guard let numeric = HostAddresses.resolve(name), !HostAddresses.isUnspecifiedOrLinkLocal(numeric) else {
            throw CanopyError(.unavailable, "node \(node)'s address \(name) does not resolve to an address Canopy connects to")
        }
        nodeAddresses[node] = numeric
        return numeric
    }

    // MARK: leases

    /// Sets the job's time limit to the lease's end (a minute beyond it; see `SlurmText.leaseMinutes`): counted
    /// from the job's start when it runs, the lease's duration while it waits.
    public func setTimeLimit(workloadID: String, handle: String, lease: Lease, expiresAt: Date?) async throws {
        guard let t = tracks[handle], t.workloadID == workloadID else { return }
        let limit: String
        if t.started {
            let start = t.startedAt ?? Date()
            limit = expiresAt.map { String(SlurmText.leaseMinutes(Int(min($0.timeIntervalSince(start).rounded(.up), Double(Int.max / 2))))) } ?? "UNLIMITED"
        } else {
            limit = lease.seconds.map { String(SlurmText.leaseMinutes($0)) } ?? "UNLIMITED"
        }
        let r = try await command.run(["scontrol", "update", "JobId=\(handle)", "TimeLimit=\(limit)"])
        guard r.ok else {
            throw CanopyError(.conflict, "Slurm refused to move job \(handle)'s time limit to \(limit) minutes: \(SlurmText.complaint(r.stderr))")
        }
    }
}

/// This host's addresses, and name resolution to numeric addresses.
enum HostAddresses {
    /// Whether `address` (numeric) is unspecified (0.0.0.0, ::, which reach this host) or link-local (169.254/16,
    /// fe80::/10: cloud metadata services and the like).
    static func isUnspecifiedOrLinkLocal(_ address: String) -> Bool {
        let a = address.lowercased()
        return a == "::" || ["0.", "169.254.", "fe8", "fe9", "fea", "feb"].contains { a.hasPrefix($0) }
    }

    /// Whether `address` (numeric) is loopback or one of this host's interfaces' addresses.
    static func isThisHost(_ address: String) -> Bool {
        if address.hasPrefix("127.") || address == "::1" || address.hasPrefix("::ffff:127.") { return true }
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else { return false }
        defer { freeifaddrs(list) }
        var p = list
        while let entry = p {
            if let sa = entry.pointee.ifa_addr, let text = numeric(sa), text == address { return true }
            p = entry.pointee.ifa_next
        }
        return false
    }

    /// The first numeric address `name` resolves to (IPv4 first), or nil.
    static func resolve(_ name: String) -> String? {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(name, nil, &hints, &result) == 0 else { return nil }
        defer { freeaddrinfo(result) }
        var found: [String] = []
        var p = result
        while let entry = p {
            if let sa = entry.pointee.ai_addr, let text = numeric(sa) { found.append(text) }
            p = entry.pointee.ai_next
        }
        return found.first { !$0.contains(":") } ?? found.first
    }

    private static func numeric(_ sa: UnsafeMutablePointer<sockaddr>) -> String? {
        let family = Int32(sa.pointee.sa_family)
        guard family == AF_INET || family == AF_INET6 else { return nil }
        var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        let length = socklen_t(family == AF_INET ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size)
        guard getnameinfo(sa, length, &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST) == 0 else { return nil }
        return String(cString: host)
    }
}

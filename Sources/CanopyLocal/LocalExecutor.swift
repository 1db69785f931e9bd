#if canImport(Glibc)
import Glibc
#endif
import CCanopySys
import CanopyCore
import CanopyHost
import Foundation
import Logging
import Synchronization

/// The process runtime: runs placed tasks as plain processes on this machine (`RuntimeKind.process`), on the node
/// of the host's `HostInventory`.
///
/// Each task runs under `canopy-shim` (see its source), which joins the task's cgroups, drops to the task's own
/// identity when the server runs as root (`TaskIdentities`), and records the exit status in the task's directory so
/// a restarted server can still learn how a task ended. When a task ends, everything it started dies with it:
/// every process in its cgroups and every process of its uid.
public final class LocalExecutor: PlacedRuntime {
    /// How the executor is set up.
    public struct Configuration: Sendable {
        /// Where task directories go (`<data-dir>/workloads`).
        public var workloadsRoot: String
        /// The shim binary.
        public var shimPath: String
        /// GPUs: declared, or nil to discover with nvidia-smi (when no inventory is given).
        public var declaredGPUs: [GPU]?
        /// Override the allocatable CPU (millicores); nil: all online CPUs.
        public var cpuMillis: Int?
        /// Override the allocatable memory (MiB); nil: all of it.
        public var memoryMiB: Int?
        /// The uids tasks run as when the server is root, one per running task.
        public var taskUIDs: ClosedRange<UInt32>
        /// The cgroup root to probe.
        public var cgroupRoot: String
        /// The node's name.
        public var nodeName: String
        /// Where the GPUs' device nodes are (`nvidiaN` by minor number): `/dev`.
        public var gpuDeviceDirectory = "/dev"

        /// Creates a configuration.
        public init(
            workloadsRoot: String, shimPath: String, declaredGPUs: [GPU]? = nil, cpuMillis: Int? = nil, memoryMiB: Int? = nil,
            taskUIDs: ClosedRange<UInt32> = TaskIdentities.defaultRange, cgroupRoot: String = "/sys/fs/cgroup", nodeName: String = "local"
        ) {
            self.workloadsRoot = workloadsRoot
            self.shimPath = shimPath
            self.declaredGPUs = declaredGPUs
            self.cpuMillis = cpuMillis
            self.memoryMiB = memoryMiB
            self.taskUIDs = taskUIDs
            self.cgroupRoot = cgroupRoot
            self.nodeName = nodeName
        }
    }

    private struct Running: Sendable {
        var pid: pid_t
        var layout: TaskLayout
        var cgroupKey: String
        /// The task's own uid, when it has one.
        var uid: uid_t?
    }

    private let config: Configuration
    private let node: Node
    /// The host's CPUs, memory and GPUs, shared with every other runtime on this host.
    public let inventory: HostInventory
    private let cgroups: Cgroups
    private let reaper = Reaper()
    private let running = Mutex<[String: Running]>([:])
    /// Per-task uids; nil when the server is not root (tasks then run as the server's user).
    private let identities: TaskIdentities?
    private let exitContinuation: AsyncStream<BackendEvent>.Continuation
    private let logger: Logger
    /// Task exits, as the reaper sees them.
    public let events: AsyncStream<BackendEvent>
    /// What this machine cannot enforce (no cgroups, not root).
    public let limitations: [String]
    /// Tasks it runs are processes.
    public var kind: RuntimeKind { .process }

    /// Probes the machine (cgroups, the task user; CPUs, memory and GPUs unless `inventory` is given) and creates the
    /// runtime.
    public init(configuration: Configuration, inventory: HostInventory? = nil, logger: Logger = Logger(label: "canopy.local")) throws {
        config = configuration
        self.logger = logger
        guard FileManager.default.isExecutableFile(atPath: configuration.shimPath) else {
            throw CanopyError(.internal, "canopy-shim not found at \(configuration.shimPath); build the package (swift build) or set CANOPY_SHIM")
        }
        try FileManager.default.createDirectory(atPath: configuration.workloadsRoot, withIntermediateDirectories: true)
        var notes: [String] = []
        // The host's one inventory, shared with any other runtime on it; built here when none is given.
        self.inventory =
            inventory
            ?? HostInventory(
                nodeName: configuration.nodeName, declaredGPUs: configuration.declaredGPUs, cpuMillis: configuration.cpuMillis,
                memoryMiB: configuration.memoryMiB)
        node = self.inventory.node
        cgroups = Cgroups.detect(root: configuration.cgroupRoot)
        if let note = cgroups.limitation { notes.append(note) }
        if geteuid() == 0 {
            identities = try TaskIdentities(range: configuration.taskUIDs)
        } else {
            identities = nil
            notes.append(
                "not running as root: tasks run as the server's own user, so they can read the server's files and signal each other; run as root for per-task identities")
        }
        limitations = notes
        // Task directories are reached by their full path (HOME, the working directory) by the task's own user:
        // the root is traversable, not listable; each task's `work` is private to its task.
        chmod(configuration.workloadsRoot, 0o711)
        (events, exitContinuation) = AsyncStream<BackendEvent>.makeStream()
    }

    private static func key(_ workloadID: String, _ index: Int) -> String { "\(workloadID)-\(index)" }

    private func layout(_ workloadID: String, _ index: Int) -> TaskLayout {
        TaskLayout(root: config.workloadsRoot, workloadID: workloadID, index: index)
    }

    /// Starts a task under `canopy-shim`; returns its shim's pid as the handle.
    public func launch(_ task: TaskLaunch) async throws -> LaunchedTask {
        let layout = layout(task.workloadID, task.taskIndex)
        guard let workdir = layout.resolve(workdir: task.spec.workdir) else {
            throw CanopyError.invalid("workdir", "workdir \"\(task.spec.workdir ?? "")\" leaves the task's directory")
        }
        let lease = try identities?.allocate()
        defer { if let lease { close(lease.lockFD) } }
        let uid = lease?.uid
        let owner = uid.map { (uid: $0, gid: gid_t($0)) }
        let key = Self.key(task.workloadID, task.taskIndex)
        let pid: pid_t
        do {
            // The task's directory (logs, exit file) stays the server's; `work` and below belong to the task alone.
            try layout.prepare(owner: owner)
            try layout.makeDirectories(workdir, owner: owner)
            try? FileManager.default.removeItem(atPath: layout.exitFile)
            try layout.stage(task.inputs, workdir: task.spec.workdir, owner: owner)
            let groups = cgroups.create(key: key, memoryMiB: task.spec.resources.memoryMiB, cpuMillis: task.spec.resources.cpuMillis)

            var argv = [config.shimPath]
            // The shim holds the uid's lock for as long as the task runs.
            if lease != nil { argv.append("--hold-lock") }
            argv += ["--exit-file", layout.exitFile, "--chdir", workdir]
            // Tasks with an identity of their own get a /tmp of their own too (not shared with other tenants).
            if uid != nil { argv += ["--private-tmp", layout.tmp] }
            // Real GPUs the task was not given are unusable in its namespace, whatever it does with
            // CUDA_VISIBLE_DEVICES (declared GPUs have no devices).
            if uid != nil {
                for device in Self.hiddenDevices(node: node, given: task.gpus, directory: config.gpuDeviceDirectory) { argv += ["--hide-device", device] }
            }
            for g in groups { argv += ["--cgroup", g] }
            if let uid { argv += ["--uid", String(uid), "--gid", String(uid)] }
            // The task's environment reaches its command only, after the shim has dropped to its user: the shim
            // itself runs as root with a fixed one (an LD_PRELOAD of the task's must not load into it).
            for variable in environment(for: task, workdir: workdir, uid: uid) { argv += ["--env", variable] }
            argv.append("--")
            argv += task.spec.command
            pid = try Spawner.spawn(
                path: config.shimPath, argv: argv, env: Self.shimEnvironment, stdout: layout.stdout, stderr: layout.stderr, keep: lease?.lockFD)
        } catch {
            if let uid { identities?.release(uid) }
            cgroups.remove(key: key)
            throw error
        }
        let start = canopy_process_start_time(pid)
        try? "\(pid) \(start) \(uid.map(String.init) ?? "-")\n".write(toFile: layout.pidFile, atomically: true, encoding: .utf8)
        running.withLock { $0[key] = Running(pid: pid, layout: layout, cgroupKey: key, uid: uid) }
        reaper.watch(pid: pid, isChild: true) { [self] exit in
            finished(workloadID: task.workloadID, index: task.taskIndex, status: exit.status)
        }
        return LaunchedTask(handle: String(pid))
    }

    /// Copies a finished task's outputs from its working directory.
    public func collectOutputs(workloadID: String, taskIndex: Int, spec: WorkloadSpec, outputs: [StagedOutput]) async throws {
        let layout = layout(workloadID, taskIndex)
        try layout.collect(outputs, workdir: spec.workdir, readableBy: layout.workOwner())
    }

    /// The device nodes of the node's discovered GPUs that are not in `given`; only where the task has its own
    /// identity does the shim have the mount namespace to hide them in.
    static func hiddenDevices(node: Node, given: [Int], directory: String) -> [String] {
        node.gpus.compactMap { gpu in
            guard let minor = gpu.minor, !given.contains(gpu.index) else { return nil }
            return "\(directory)/nvidia\(minor)"
        }
    }

    /// The whole environment `canopy-shim` starts with, as root: fixed, nothing of the task's or the server's.
    static let shimEnvironment = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"]

    /// The PATH a task gets unless it sets its own: the standard one, never the server's (root's PATH may name
    /// directories the task cannot read, which turns "not found" into "Permission denied").
    public static let standardPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    private func environment(for task: TaskLaunch, workdir: String, uid: uid_t?) -> [String] {
        let user = uid.map { "task-\($0)" } ?? (ProcessInfo.processInfo.environment["USER"] ?? "canopy")
        var env: [String: String] = [
            "PATH": Self.standardPath,
            "HOME": workdir,
            "LANG": "C.UTF-8",
            "USER": user,
            "LOGNAME": user,
        ]
        for (k, v) in task.spec.env { env[k] = v }
        for (k, v) in task.secretEnv { env[k] = v }
        env["CANOPY_WORKLOAD_ID"] = task.workloadID
        env["CANOPY_TASK_INDEX"] = String(task.taskIndex)
        env["CANOPY_TASK_COUNT"] = String(task.spec.tasks)
        env["CANOPY_NODE"] = task.node
        if !task.spec.ports.isEmpty { env["CANOPY_PORTS"] = task.spec.ports.map { String($0.port) }.joined(separator: ",") }
        if !node.gpus.isEmpty || !task.gpus.isEmpty {
            // A task sees exactly its own GPUs; one that asked for none sees none. Discovered GPUs are named by
            // UUID, which CUDA resolves whatever order it enumerates devices in (its default is fastest first,
            // not nvidia-smi's bus order); CANOPY_GPUS keeps the indices.
            let byIndex = Dictionary(node.gpus.map { ($0.index, $0) }, uniquingKeysWith: { a, _ in a })
            env["CUDA_VISIBLE_DEVICES"] = task.gpus.map { byIndex[$0]?.uuid ?? String($0) }.joined(separator: ",")
            env["CANOPY_GPUS"] = task.gpus.map(String.init).joined(separator: ",")
        }
        return env.map { "\($0.key)=\($0.value)" }
    }

    /// Called on the reaper thread when a task's shim has exited.
    private func finished(workloadID: String, index: Int, status: Int32?) {
        let key = Self.key(workloadID, index)
        let entry = running.withLock { $0.removeValue(forKey: key) }
        let layout = entry?.layout ?? layout(workloadID, index)
        reap(key: key, uid: entry?.uid, layout: layout)
        var code = layout.readExit()
        if code == nil, let status {
            // The shim itself was killed (SIGKILL after the grace period): take its wait status.
            code = (status & 0x7f) == 0 ? Int((status >> 8) & 0xff) : 128 + Int(status & 0x7f)
        }
        var reason: Reason?
        if cgroups.wasOOMKilled(key: key) {
            reason = Reason(.outOfMemory, "task \(index) was killed for using more than its memory limit")
        } else if code == nil {
            reason = Reason(.taskVanished, "task \(index) ended without recording an exit status")
        }
        cgroups.remove(key: key)
        exitContinuation.yield(.exited(TaskExit(workloadID: workloadID, taskIndex: index, exitCode: code, reason: reason, at: Date())))
    }

    /// SIGTERM to the task's process group, SIGKILL (and its cgroups emptied) after `grace` seconds.
    public func stop(workloadID: String, taskIndex: Int, handle: String, grace: Double) async {
        guard let pid = running.withLock({ $0[Self.key(workloadID, taskIndex)]?.pid }) else { return }
        kill(-pid, SIGTERM)
        let deadline = Date().addingTimeInterval(grace)
        // The same task, not merely the same key: a restarted interactive workload's next attempt may already run
        // under it, and must not be killed for its predecessor.
        while Date() < deadline {
            try? await Task.sleep(for: .milliseconds(50))
            if running.withLock({ $0[Self.key(workloadID, taskIndex)]?.pid != pid }) { return }
        }
        if running.withLock({ $0[Self.key(workloadID, taskIndex)]?.pid == pid }) {
            logger.info("task did not stop in time; killing", metadata: ["workload.id": "\(workloadID)", "task": "\(taskIndex)"])
            kill(-pid, SIGKILL)
            cgroups.killAll(key: Self.key(workloadID, taskIndex))
        }
    }

    /// After a task has ended: nothing it started outlives it (its cgroups are emptied; without cgroups, its uid is
    /// the only handle on what it left behind), its uid is freed, and its directory is closed to later tasks.
    private func reap(key: String, uid: uid_t?, layout: TaskLayout) {
        cgroups.killAll(key: key)
        if let uid {
            if !cgroups.tracksProcesses { killUser(uid) }
            identities?.release(uid)
        }
        layout.seal()
    }

    /// Kills every process of a task's uid (see `canopy-shim --kill-uid`), waiting for the helper to finish; only
    /// while no task holds the uid's lock (after a restart it may already belong to another server's task).
    private func killUser(_ uid: uid_t) {
        guard uid != 0 else { return }
        identities?.whileLocked(uid) {
            guard let pid = try? Spawner.spawn(path: config.shimPath, argv: [config.shimPath, "--kill-uid", String(uid)], env: [], stdout: "/dev/null", stderr: "/dev/null")
            else { return }
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        }
    }

    /// Adopts a task whose shim still runs (same pid and start time); otherwise reads its exit file.
    public func recover(workloadID: String, taskIndex: Int, handle: String?) async -> TaskRecovery {
        let layout = layout(workloadID, taskIndex)
        let key = Self.key(workloadID, taskIndex)
        var uid: uid_t?
        if let text = try? String(contentsOfFile: layout.pidFile, encoding: .utf8) {
            let f = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
            if f.count >= 3, let n = uid_t(f[2]), n != 0 { uid = n }
            if f.count >= 2, let pid = pid_t(f[0]), let start = UInt64(f[1]), start != 0, canopy_process_start_time(pid) == start {
                if let uid { identities?.adopt(uid) }
                running.withLock { $0[key] = Running(pid: pid, layout: layout, cgroupKey: key, uid: uid) }
                let adopted = reaper.watch(pid: pid, isChild: false) { [self] _ in
                    finished(workloadID: workloadID, index: taskIndex, status: nil)
                }
                if adopted { return .running }
                running.withLock { _ = $0.removeValue(forKey: key) }
                if let uid { identities?.release(uid) }
            }
        }
        // The task ended while the server was away: whatever it left running goes now.
        reap(key: key, uid: uid, layout: layout)
        cgroups.remove(key: key)
        guard let code = layout.readExit() else { return .vanished }
        let when = (try? FileManager.default.attributesOfItem(atPath: layout.exitFile)[.modificationDate] as? Date) ?? Date()
        return .exited(TaskExit(workloadID: workloadID, taskIndex: taskIndex, exitCode: code, at: when))
    }

    /// Nothing to do in the background: the reaper reports exits as they happen.
    public func run() async {}

    /// Deletes the workload's directory (see `WorkloadDirectory.remove`).
    public func removeFiles(workloadID: String) async throws {
        try WorkloadDirectory.remove(root: config.workloadsRoot, workloadID: workloadID)
    }

    /// Writes the notice into the task's directory (see `TaskLayout.post`).
    public func post(_ notice: TaskNotice, workloadID: String, taskIndex: Int) async {
        TaskLayout(root: config.workloadsRoot, workloadID: workloadID, index: taskIndex).post(notice)
    }

    /// The task's log file for a stream ("stdout" or "stderr").
    public func logPath(workloadID: String, taskIndex: Int, stream: String) -> String {
        let l = layout(workloadID, taskIndex)
        return stream == "stderr" ? l.stderr : l.stdout
    }
}

extension LocalExecutor: TaskPortConnector {
    /// Tasks share the host's network, so a task's port is on loopback; it is connected to only when the socket
    /// listening there belongs to the task's own uid (where tasks have one): a port another task grabbed first is
    /// refused, not connected to.
    public func connect(workloadID: String, taskIndex: Int, handle: String, port: Int) async throws -> Int32 {
        let key = Self.key(workloadID, taskIndex)
        guard let task = running.withLock({ $0[key] }), String(task.pid) == handle else {
            throw CanopyError(.unavailable, "task \(taskIndex) of workload \(workloadID) is not running")
        }
        let taskUID = task.uid
        return try await Blocking.run { () throws -> Int32 in
            // Owned by the task's uid, and open in one of its processes (where the task has a uid of its own).
            let (listening, own) = ListeningSockets.owned(port: port, by: taskUID ?? getuid(), held: taskUID != nil)
            guard listening else {
                throw CanopyError(.unavailable, "nothing listens on port \(port) of task \(taskIndex) on loopback (yet?)")
            }
            guard let own else {
                throw CanopyError(.unavailable, "port \(port) is held by a process that is not task \(taskIndex)'s; Canopy does not connect to it")
            }
            let fd = canopy_connect_tcp(nil, own.connectAddress, Int32(port), 5000)
            guard fd >= 0 else {
                throw CanopyError(.unavailable, "cannot connect to port \(port) of task \(taskIndex): \(String(cString: strerror(-fd)))")
            }
            return fd
        }
    }
}

extension LocalExecutor: TaskUsageProbe {
    /// The task's cgroup's CPU time; without cgroups, the CPU time of the processes of the task's own uid.
    public func cpuSeconds(workloadID: String, taskIndex: Int, handle: String) async -> Double? {
        let key = Self.key(workloadID, taskIndex)
        guard let task = running.withLock({ $0[key] }), String(task.pid) == handle else { return nil }
        if let seconds = cgroups.cpuSeconds(key: task.cgroupKey) { return seconds }
        guard let uid = task.uid else { return nil }
        // A walk of /proc: off the cooperative pool.
        return await Blocking.run { Self.cpuSeconds(ofUser: uid) }
    }

    /// utime + stime of every process of `uid`, from /proc.
    static func cpuSeconds(ofUser uid: uid_t) -> Double? {
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        var total = 0.0
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] where entry.first?.isNumber == true {
            var st = stat()
            guard stat("/proc/\(entry)", &st) == 0, st.st_uid == uid,
                let text = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8), let close = text.lastIndex(of: ")")
            else { continue }
            let fields = text[text.index(after: close)...].split(separator: " ")
            // After the command: state is field 3, utime 14 and stime 15.
            guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { continue }
            total += (user + system) / ticks
        }
        return total
    }
}

extension LocalExecutor: TaskExecRunner {
    /// Runs the command through `canopy-shim --exec-into`: in the task's mount and IPC namespaces (where it has
    /// them), its cgroups, its working directory, as its user, with the environment its command started with.
    public func exec(workloadID: String, taskIndex: Int, handle: String, request: ExecRequest) async throws -> any ExecSession {
        let key = Self.key(workloadID, taskIndex)
        guard let task = running.withLock({ $0[key] }), String(task.pid) == handle else {
            throw CanopyError(.unavailable, "task \(taskIndex) of workload \(workloadID) is not running")
        }
        guard !request.command.isEmpty else { throw CanopyError.invalid("command", "give a command to run") }
        guard let workdir = task.layout.resolve(workdir: request.workdir) else {
            throw CanopyError.invalid("workdir", "the workload's workdir leaves the task's directory")
        }
        // The task's command (the shim's child): its namespaces and environment are the task's.
        let children = (try? String(contentsOfFile: "/proc/\(task.pid)/task/\(task.pid)/children", encoding: .utf8)) ?? ""
        guard let command = children.split(separator: " ").compactMap({ pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }).first else {
            throw CanopyError(.unavailable, "task \(taskIndex) of workload \(workloadID) is starting or ending; try again")
        }
        var env = Self.environment(ofProcess: command)
        if request.tty, !env.contains(where: { $0.hasPrefix("TERM=") }) { env.append("TERM=xterm-256color") }
        var argv = [config.shimPath, "--exec-into", task.uid != nil ? String(command) : "0"]
        if request.tty { argv.append("--tty") }
        for g in cgroups.directories(for: key) { argv += ["--cgroup", g] }
        argv += ["--chdir", workdir]
        if let uid = task.uid { argv += ["--uid", String(uid), "--gid", String(uid)] }
        // The task's environment (which the task itself controls) for the command only; see launch.
        for variable in env { argv += ["--env", variable] }
        argv.append("--")
        argv += request.command

        // The task's user reads and writes its terminal. Ending a terminal exec sends a hang-up first, as a
        // terminal's end gives, so that the shell passes it on to its jobs.
        let tty = request.tty
        let (session, pid) = try DescriptorExecSession.spawn(
            path: config.shimPath, argv: argv, env: Self.shimEnvironment, tty: tty, rows: request.rows, columns: request.columns,
            ptyOwner: task.uid ?? UInt32.max
        ) { pid in
            {
                if tty {
                    kill(-pid, SIGHUP)
                    try? await Task.sleep(for: .seconds(1))
                }
                await Self.killSession(pid)
            }
        }
        reaper.watch(pid: pid, isChild: true) { exit in
            let code = exit.status.map { s in (s & 0x7f) == 0 ? Int((s >> 8) & 0xff) : 128 + Int(s & 0x7f) }
            session.ended(code)
        }
        return session
    }

    /// Kills every process of the session `sid` leads (an exec's command and the jobs it started in other process
    /// groups); what left the session dies with the task.
    static func killSession(_ sid: pid_t) async {
        kill(-sid, SIGKILL)
        await Blocking.run {
            for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
                guard let pid = pid_t(entry), let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                    let close = stat.lastIndex(of: ")")
                else { continue }
                // After "pid (comm)": state, ppid, pgrp, session.
                let fields = stat[stat.index(after: close)...].split(separator: " ")
                if fields.count > 3, pid_t(fields[3]) == sid { kill(pid, SIGKILL) }
            }
        }
    }

    /// The environment a process started with (`/proc/PID/environ`).
    static func environment(ofProcess pid: pid_t) -> [String] {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return ["PATH=\(standardPath)"] }
        return data.split(separator: 0).compactMap { String(bytes: $0, encoding: .utf8) }
    }
}

#if canImport(Glibc)
import Glibc
#endif
import AsyncHTTPClient
import CCanopySys
import CanopyCore
import CanopyHost
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOFoundationCompat
import Synchronization

/// Runs tasks as containers of a Docker-compatible engine, beside the process runtime on the same host.
///
/// Each task is one container, named `canopy-<workload>-<task>` and labelled with its workload, task and tenant, so
/// a restarted server finds it again and never starts a second one for the same task. Its working directory (the
/// same `workloads/<id>/task-<n>/work` the process runtime uses, so data staging is unchanged) is mounted at
/// `/workspace`. The container runs as the task's own uid (see `TaskIdentities`) unless its queue allows root, is
/// never privileged, gets `no-new-privileges`, the CPU, memory and pids limits of the request, and only the GPUs
/// the scheduler gave it. Its output is copied from the engine into the task's log files while it runs, so logs
/// stay after the container is removed.
public final class ContainerRuntime: PlacedRuntime {
    /// How the runtime is set up.
    public struct Configuration: Sendable {
        /// Where task directories go (`<data-dir>/workloads`).
        public var workloadsRoot: String
        /// The network containers join: `none` (loopback only), `bridge` or another engine network, or `host`;
        /// nil: the engine's default (Docker's `bridge` where it has one; where it has none, as with
        /// `dockerd --bridge=none`, a network namespace of the container's own with only loopback).
        public var network: String?
        /// The most processes a task may have.
        public var pidsLimit: Int
        /// Whether to ask the engine for NVIDIA GPUs (`DeviceRequests`); nil: when the engine has the NVIDIA runtime.
        public var nvidiaDevices: Bool?

        /// Creates a configuration.
        public init(workloadsRoot: String, network: String? = nil, pidsLimit: Int = 4096, nvidiaDevices: Bool? = nil) {
            self.workloadsRoot = workloadsRoot
            self.network = network
            self.pidsLimit = pidsLimit
            self.nvidiaDevices = nvidiaDevices
        }
    }

    private struct Running: Sendable {
        var workloadID: String
        var taskIndex: Int
        var containerID: String
        var uid: uid_t?
        /// The uid's lock, where no holder process took it.
        var lockFD: Int32?
        /// The process that holds the uid's lock for as long as the container runs (see `holdLock`).
        var holder: pid_t?
    }

    public let kind = RuntimeKind.container
    public let events: AsyncStream<BackendEvent>
    public let limitations: [String]
    /// The engine.
    public let engine: DockerEngine
    private let continuation: AsyncStream<BackendEvent>.Continuation
    private let config: Configuration
    private let identities: TaskIdentities?
    private let logger: Logger
    /// Running containers by container id.
    private let running = Mutex<[String: Running]>([:])
    /// Log copies in progress, by container id.
    private let pumps = Mutex<[String: Task<Bool, Never>]>([:])
    /// Why the engine cannot be reached, while it cannot.
    private let problem = Mutex<String?>(nil)
    private let nvidia = Mutex<Bool>(false)
    /// When this runtime started: containers of this server created before it and not re-adopted are orphans.
    private let startedAt = Date()
    private let swept = Mutex(false)


    /// Creates the runtime; nothing is contacted until `run()` or a launch.
    public init(engine: DockerEngine, configuration: Configuration, identities: TaskIdentities?, logger: Logger = Logger(label: "canopy.container")) {
        self.engine = engine
        self.config = configuration
        self.identities = identities
        self.logger = logger
        var notes: [String] = []
        if identities == nil {
            notes.append("not running as root: containers run as the image's user, since the server has no task uids to give them")
        }
        limitations = notes
        nvidia.withLock { $0 = configuration.nvidiaDevices ?? false }
        (events, continuation) = AsyncStream.makeStream()
    }

    static func name(_ workloadID: String, _ index: Int) -> String { "canopy-\(workloadID)-\(index)" }

    private func layout(_ workloadID: String, _ index: Int) -> TaskLayout {
        TaskLayout(root: config.workloadsRoot, workloadID: workloadID, index: index)
    }

    // MARK: launch

    public func launch(_ task: TaskLaunch) async throws -> LaunchedTask {
        guard let image = task.imageReference else { throw CanopyError(.internal, "a container task needs an image") }
        if let problem = problem.withLock({ $0 }) { throw BackendUnavailable(problem) }
        let layout = layout(task.workloadID, task.taskIndex)
        guard let workdir = layout.resolve(workdir: task.spec.workdir) else {
            throw CanopyError.invalid("workdir", "workdir \"\(task.spec.workdir ?? "")\" leaves the task's directory")
        }
        let lease = try identities?.allocate()
        let owner = lease.map { (uid: $0.uid, gid: gid_t($0.uid)) }
        do {
            try layout.prepare(owner: owner)
            try layout.makeDirectories(workdir, owner: owner)
            try layout.stage(task.inputs, workdir: task.spec.workdir, owner: owner)
            var mounts: [ResolvedMount] = []
            for (i, m) in task.mounts.enumerated() {
                let fd = m.fromDataStore ? try FileTree.prepareMount(m.hostPath, owner: owner, readOnly: m.readOnly) : try FileTree.openWithoutLinks(m.hostPath)
                defer { close(fd) }
                var pinned = m
                pinned.hostPath = try Self.pin(fd, as: i, layout: layout) ?? m.hostPath
                mounts.append(pinned)
            }
            for file in [layout.stdout, layout.stderr] { try? FileManager.default.removeItem(atPath: file) }
            let name = Self.name(task.workloadID, task.taskIndex)
            var pinnedTask = task
            pinnedTask.mounts = mounts
            let body = createBody(pinnedTask, image: image, workdir: "/workspace" + workdir.dropFirst(layout.work.count), layout: layout, uid: owner?.uid)
            var (status, answer) = try await engine.call(.POST, "/containers/create", query: [("name", name)], json: body)
            if status == 409 {
                // A container left by a launch that crashed half-way: it never ran for us (the task was not
                // recorded as started), so it goes, and this launch creates the task's one container.
                _ = try? await engine.call(.DELETE, "/containers/\(name)", query: [("force", "1"), ("v", "1")])
                (status, answer) = try await engine.call(.POST, "/containers/create", query: [("name", name)], json: body)
            }
            if status == 404 {
                // The engine lacks something the container names: its image (removed behind Canopy's back) or the
                // configured network.
                let said = (try? JSONDecoder().decode([String: String].self, from: answer))?["message"] ?? String(buffer: answer)
                throw CanopyError(
                    .notFound,
                    "the container engine cannot create task \(task.taskIndex)'s container: \(said) (was image \(task.spec.image ?? image) removed from the engine behind Canopy's back, or does --container-network name a network it lacks?)")
            }
            try DockerEngine.check(status, answer)
            struct Created: Decodable { var Id: String }
            let id = try JSONDecoder().decode(Created.self, from: answer).Id
            // The uid stays locked machine-wide while the container runs, by a process of its own that outlives a
            // server killed meanwhile (as a process task's shim holds its lock), so no other server hands it out.
            let holder = lease.flatMap { holdLock($0.lockFD, uid: $0.uid, layout: layout) }
            running.withLock {
                $0[id] = Running(
                    workloadID: task.workloadID, taskIndex: task.taskIndex, containerID: id, uid: owner?.uid, lockFD: holder == nil ? lease?.lockFD : nil,
                    holder: holder)
            }
            let (startStatus, startAnswer) = try await engine.call(.POST, "/containers/\(id)/start")
            if startStatus >= 300 {
                if let entry = running.withLock({ $0.removeValue(forKey: id) }) { Self.release(entry.holder) }
                _ = try? await engine.call(.DELETE, "/containers/\(id)", query: [("force", "1"), ("v", "1")])
                try DockerEngine.check(startStatus, startAnswer)
            }
            // Unless it already ended and was collected (its die event can come before this line runs).
            if running.withLock({ $0[id] != nil }) { startPump(id, layout: layout, truncate: true) }
            // The holder has its own copy of the lock's descriptor; the server keeps one only where there is none.
            if let lease, running.withLock({ $0[id]?.holder != nil }) { close(lease.lockFD) }
            return LaunchedTask(handle: id)
        } catch {
            // Whatever this launch registered goes with it: the entry (so no later event or reconcile ends a task
            // that never started, or closes its lock twice), the lock's holder, and a container half made.
            let left = running.withLock { r -> Running? in
                guard let key = r.first(where: { $0.value.workloadID == task.workloadID && $0.value.taskIndex == task.taskIndex })?.key else { return nil }
                return r.removeValue(forKey: key)
            }
            if let left {
                Self.release(left.holder)
                pumps.withLock { $0.removeValue(forKey: left.containerID) }?.cancel()
                _ = try? await engine.call(.DELETE, "/containers/\(left.containerID)", query: [("force", "1"), ("v", "1")])
            }
            Self.unpin(layout)
            if let lease {
                // The server's copy of the lock is still open here (it is closed only on success), and the entry's
                // was the same descriptor: closed once.
                close(lease.lockFD)
                identities?.release(lease.uid)
            }
            if let e = error as? DockerEngine.EngineError {
                // The engine's own trouble (a 5xx) may pass: the launch is tried again later. A 4xx is about the task.
                if e.status >= 500 { throw BackendUnavailable("the container engine failed task \(task.taskIndex): \(e.message)") }
                throw CanopyError(.invalidArgument, "the container engine refused task \(task.taskIndex): \(e.message)")
            }
            throw error
        }
    }

    private func createBody(_ task: TaskLaunch, image: String, workdir: String, layout: TaskLayout, uid: uid_t?) -> CreateContainer {
        var env: [String: String] = ["HOME": "/workspace", "LANG": "C.UTF-8"]
        for (k, v) in task.spec.env { env[k] = v }
        for (k, v) in task.secretEnv { env[k] = v }
        env["CANOPY_WORKLOAD_ID"] = task.workloadID
        env["CANOPY_TASK_INDEX"] = String(task.taskIndex)
        env["CANOPY_TASK_COUNT"] = String(task.spec.tasks)
        env["CANOPY_NODE"] = task.node
        if !task.spec.ports.isEmpty { env["CANOPY_PORTS"] = task.spec.ports.map { String($0.port) }.joined(separator: ",") }
        // A task sees exactly its own GPUs (none when it asked for none), whether the engine has real ones or not.
        let gpuList = task.gpus.map(String.init).joined(separator: ",")
        let withDevices = nvidia.withLock({ $0 }) && !task.gpus.isEmpty
        // With the engine's NVIDIA runtime the container holds only its own devices, and CUDA numbers what it
        // sees from 0: the host's indices (CANOPY_GPUS) would name GPUs that are not there.
        env["CUDA_VISIBLE_DEVICES"] = withDevices ? task.gpus.indices.map(String.init).joined(separator: ",") : gpuList
        env["CANOPY_GPUS"] = gpuList
        env["NVIDIA_VISIBLE_DEVICES"] = task.gpus.isEmpty ? "void" : gpuList
        var mounts = [CreateContainer.MountSpec(Type: "bind", Source: layout.work, Target: "/workspace", ReadOnly: false)]
        for m in task.mounts { mounts.append(.init(Type: "bind", Source: m.hostPath, Target: m.target, ReadOnly: m.readOnly)) }
        var host = CreateContainer.Host(
            Mounts: mounts, Memory: Int64(task.spec.resources.memoryMiB) << 20, MemorySwap: Int64(task.spec.resources.memoryMiB) << 20,
            NanoCpus: Int64(task.spec.resources.cpuMillis) * 1_000_000, PidsLimit: Int64(config.pidsLimit), NetworkMode: config.network,
            Privileged: false, SecurityOpt: ["no-new-privileges"], DeviceRequests: nil, Init: true)
        if withDevices {
            host.DeviceRequests = [.init(Driver: "nvidia", DeviceIDs: task.gpus.map(String.init), Capabilities: [["gpu"]])]
        }
        let command = task.spec.command
        return CreateContainer(
            Image: image, Entrypoint: Array(command.prefix(1)), Cmd: Array(command.dropFirst()),
            Env: env.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }, WorkingDir: workdir,
            User: task.allowRoot ? nil : uid.map { "\($0):\($0)" },
            Labels: [
                "canopy.workload": task.workloadID, "canopy.task": String(task.taskIndex), "canopy.tenant": task.tenant,
                "canopy.uid": uid.map(String.init) ?? "",
                // Which server's: the one whose data directory holds the task (several may share an engine).
                "canopy.root": config.workloadsRoot,
            ],
            HostConfig: host)
    }

    // MARK: logs

    /// Copies the container's output into the task's log files (from the start when `truncate`), until it ends;
    /// does nothing when a copy of that container's output already runs.
    private func startPump(_ id: String, layout: TaskLayout, truncate: Bool) {
        pumps.withLock { pumps in
            guard pumps[id] == nil else { return }
            pumps[id] = Task<Bool, Never> { [engine] in
                let complete = await Self.copyLogs(engine: engine, id: id, layout: layout, follow: true, truncate: truncate)
                // A copy cut short (the engine went away) leaves its place, so the next reconcile starts another.
                if !complete { self.pumps.withLock { _ = $0.removeValue(forKey: id) } }
                return complete
            }
        }
    }

    /// Stops copying output (the server is shutting down; a restarted server copies it again from the engine).
    func cancelPumps() {
        for task in pumps.withLock({ p in defer { p = [:] }; return p.values }) { task.cancel() }
    }

    /// Copies the engine's log of a container into the task's log files; returns whether it read to the end.
    static func copyLogs(engine: DockerEngine, id: String, layout: TaskLayout, follow: Bool, truncate: Bool) async -> Bool {
        let flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW | (truncate ? O_TRUNC : 0)
        let out = open(layout.stdout, flags, 0o600)
        let err = open(layout.stderr, flags, 0o600)
        defer {
            if out >= 0 { close(out) }
            if err >= 0 { close(err) }
        }
        guard out >= 0, err >= 0 else { return false }
        do {
            let response = try await engine.stream(
                "/containers/\(id)/logs", query: [("stdout", "1"), ("stderr", "1"), ("follow", follow ? "1" : "0")])
            guard response.status.code == 200 else { return false }
            var demux = LogDemultiplexer()
            for try await chunk in response.body {
                demux.feed(chunk) { stream, bytes in
                    bytes.withUnsafeReadableBytes { raw in _ = FileTree.writeAll(stream == 2 ? err : out, raw) }
                }
            }
            return true
        } catch {
            return false
        }
    }

    /// Deletes the workload's directory (see `WorkloadDirectory.remove`).
    public func removeFiles(workloadID: String) async throws {
        try WorkloadDirectory.remove(root: config.workloadsRoot, workloadID: workloadID)
    }

    /// Writes the notice into the task's directory (see `TaskLayout.post`).
    public func post(_ notice: TaskNotice, workloadID: String, taskIndex: Int) async {
        TaskLayout(root: config.workloadsRoot, workloadID: workloadID, index: taskIndex).post(notice)
    }

    public func logPath(workloadID: String, taskIndex: Int, stream: String) -> String {
        let l = layout(workloadID, taskIndex)
        return stream == "stderr" ? l.stderr : l.stdout
    }

    public func collectOutputs(workloadID: String, taskIndex: Int, spec: WorkloadSpec, outputs: [StagedOutput]) async throws {
        let layout = layout(workloadID, taskIndex)
        try layout.collect(outputs, workdir: spec.workdir, readableBy: layout.workOwner())
    }

    // MARK: stop and ends

    public func stop(workloadID: String, taskIndex: Int, handle: String, grace: Double) async {
        let seconds = max(0, Int(grace.rounded(.up)))
        // The engine sends the stop signal, then SIGKILL after `t` seconds, and answers once the container stopped.
        _ = try? await engine.call(.POST, "/containers/\(handle)/stop", query: [("t", String(seconds))], timeout: .seconds(Int64(seconds) + 60))
    }

    /// A container ended: its exit is read, its log finished, the container removed, the task's uid freed.
    private func ended(_ id: String) async {
        guard let entry = running.withLock({ $0.removeValue(forKey: id) }) else { return }
        let exit = await collect(id, workloadID: entry.workloadID, taskIndex: entry.taskIndex)
        if let fd = entry.lockFD { close(fd) }
        Self.release(entry.holder)
        if let uid = entry.uid { identities?.release(uid) }
        continuation.yield(.exited(exit))
    }

    /// Reads how a stopped container ended, completes its log files and removes it.
    private func collect(_ id: String, workloadID: String, taskIndex: Int) async -> TaskExit {
        let layout = layout(workloadID, taskIndex)
        var exit = TaskExit(workloadID: workloadID, taskIndex: taskIndex, exitCode: nil, at: Date())
        var state = try? await engine.call(Inspect.self, .GET, "/containers/\(id)/json").State
        // Killed by SIGKILL without the OOM flag: the engine may learn of the OOM kill after the exit (its OOM event
        // and its exit event race), so it is asked again before the flag is believed.
        for _ in 0..<4 where state?.ExitCode == 137 && state?.OOMKilled != true {
            try? await Task.sleep(for: .milliseconds(250))
            if let again = try? await engine.call(Inspect.self, .GET, "/containers/\(id)/json").State { state = again }
        }
        if let state, state.Status == "created" {
            // Made but never started (a launch cut off between create and start): it did not run at all.
            exit.reason = Reason(.launchFailed, "task \(taskIndex)'s container was created but never started")
        } else if let state {
            exit.exitCode = state.ExitCode
            if let finished = state.FinishedAt.flatMap(Self.parseTime) { exit.at = finished }
            if state.OOMKilled == true {
                exit.reason = Reason(.outOfMemory, "task \(taskIndex) was killed for using more than its memory limit")
            } else if let error = state.Error, !error.isEmpty, state.ExitCode != 0 {
                exit.reason = Reason(.launchFailed, "task \(taskIndex) could not run: \(error)")
            }
        } else {
            exit.reason = Reason(.taskVanished, "task \(taskIndex)'s container disappeared from the engine before Canopy read how it ended")
        }
        let pump = pumps.withLock { $0.removeValue(forKey: id) }
        var complete = false
        if let pump {
            // The copy ends by itself once the engine has sent the last of the output.
            complete = await withTaskGroup(of: Bool?.self) { group in
                group.addTask { await pump.value }
                group.addTask {
                    try? await Task.sleep(for: .seconds(5))
                    return nil
                }
                let first = await group.next() ?? nil
                group.cancelAll()
                return first ?? false
            }
            // A copy still running after the wait stops writing before the files are rewritten below.
            if !complete { pump.cancel() }
        }
        if !complete {
            _ = await Self.copyLogs(engine: engine, id: id, layout: layout, follow: false, truncate: true)
        }
        _ = try? await engine.call(.DELETE, "/containers/\(id)", query: [("force", "1"), ("v", "1")])
        Self.unpin(layout)
        layout.seal()
        return exit
    }

    static func parseTime(_ text: String) -> Date? {
        guard !text.hasPrefix("0001-") else { return nil }
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let d = f.date(from: text) { return d }
        // The engine writes nanoseconds, more digits than the formatter reads.
        if let dot = text.firstIndex(of: "."), let z = text.lastIndex(where: { $0 == "Z" || $0 == "+" }) {
            let trimmed = String(text[..<dot]) + "." + text[text.index(after: dot)..<z].prefix(3) + text[z...]
            return f.date(from: trimmed)
        }
        return nil
    }

    // MARK: recovery

    public func recover(workloadID: String, taskIndex: Int, handle: String?) async -> TaskRecovery {
        let ref = handle ?? Self.name(workloadID, taskIndex)
        let (status, body): (Int, ByteBuffer)
        do {
            (status, body) = try await engine.call(.GET, "/containers/\(ref)/json")
        } catch {
            // The engine is away: the task is taken as running and checked again once the engine answers, and
            // the outage is reported at once, so its workload shows it from the first read after the restart.
            let held = Self.holder(layout(workloadID, taskIndex))
            held.map { identities?.adopt($0.1) }
            running.withLock {
                $0[ref] = Running(workloadID: workloadID, taskIndex: taskIndex, containerID: ref, uid: held?.1, lockFD: nil, holder: held?.0)
            }
            setProblem((error as? BackendUnavailable)?.message ?? "\(error)")
            return .running
        }
        guard status == 200, let inspect = try? JSONDecoder().decode(Inspect.self, from: body) else { return .vanished }
        let uid = inspect.Config?.Labels?["canopy.uid"].flatMap { uid_t($0) }
        if inspect.State.Running == true || inspect.State.Status == "created" && handle != nil {
            let (fd, holder) = adoptLock(uid, layout: layout(workloadID, taskIndex))
            running.withLock {
                $0[inspect.Id] = Running(workloadID: workloadID, taskIndex: taskIndex, containerID: inspect.Id, uid: uid, lockFD: fd, holder: holder)
            }
            startPump(inspect.Id, layout: layout(workloadID, taskIndex), truncate: true)
            return .running
        }
        if inspect.State.Status == "created" {
            // Created by a launch that crashed before it was recorded: it never ran.
            _ = try? await engine.call(.DELETE, "/containers/\(inspect.Id)", query: [("force", "1"), ("v", "1")])
            return .vanished
        }
        // It ended while the server was away: its lock's holder, if it still runs, goes now.
        let layout = layout(workloadID, taskIndex)
        if let (pid, _) = Self.holder(layout) { Self.release(pid) }
        return .exited(await collect(inspect.Id, workloadID: workloadID, taskIndex: taskIndex))
    }

    // MARK: pinned mounts

    /// Pins a mount source: the directory or file open as `fd` (opened without following any link) is bind-mounted
    /// through its descriptor onto `task-N/mounts/I`, a point only the server can change, and the engine is given
    /// that point. A task that swaps a component of the source's path for a link after the check (another task of
    /// the tenant, with the same tree mounted read-write, can) therefore changes nothing: the engine binds what was
    /// checked. Nil where the server cannot mount (not root): the engine is then given the checked path.
    static func pin(_ fd: Int32, as index: Int, layout: TaskLayout) throws -> String? {
        guard geteuid() == 0 else { return nil }
        let dir = layout.directory + "/mounts"
        if mkdir(dir, 0o700) != 0 && errno != EEXIST { throw StagingError("cannot create \(dir): \(String(cString: strerror(errno)))") }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw StagingError("cannot read a mount source: \(String(cString: strerror(errno)))") }
        let point = "\(dir)/\(index)"
        _ = umount2(point, Int32(MNT_DETACH))
        if st.st_mode & S_IFMT == S_IFDIR {
            if mkdir(point, 0o700) != 0 && errno != EEXIST { throw StagingError("cannot create \(point): \(String(cString: strerror(errno)))") }
        } else {
            let f = open(point, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
            guard f >= 0 else { throw StagingError("cannot create \(point): \(String(cString: strerror(errno)))") }
            close(f)
        }
        guard mount("/proc/self/fd/\(fd)", point, nil, UInt(MS_BIND), nil) == 0 else {
            throw StagingError("cannot pin a mount source: \(String(cString: strerror(errno)))")
        }
        return point
    }

    /// Undoes `pin` for every mount of a task: each point is detached first and then removed only when empty, so
    /// the mounted data is never touched.
    static func unpin(_ layout: TaskLayout) {
        let dir = layout.directory + "/mounts"
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return }
        for name in names {
            let point = dir + "/" + name
            _ = umount2(point, Int32(MNT_DETACH))
            if rmdir(point) != 0 && errno == ENOTDIR {
                var st = stat()
                // A file point: removed only when it is the server's own empty file, not a mounted one.
                if lstat(point, &st) == 0, st.st_size == 0, st.st_uid == geteuid() { unlink(point) }
            }
        }
        rmdir(dir)
    }

    // MARK: uid locks

    /// Starts the process that holds a container task's uid lock (descriptor 3 of a `sleep infinity` in a session of
    /// its own) and records it in the task's directory; nil where it cannot be started (the server then holds it).
    private func holdLock(_ lockFD: Int32, uid: uid_t, layout: TaskLayout) -> pid_t? {
        guard let sleep = ["/bin/sleep", "/usr/bin/sleep"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }),
            let pid = try? Spawner.spawn(path: sleep, argv: [sleep, "infinity"], env: [], stdout: "/dev/null", stderr: "/dev/null", keep: lockFD)
        else { return nil }
        try? "\(pid) \(canopy_process_start_time(pid)) \(uid)\n".write(toFile: layout.directory + "/uid.lock", atomically: true, encoding: .utf8)
        return pid
    }

    /// The lock holder recorded in a task's directory, if that very process still runs.
    private static func holder(_ layout: TaskLayout) -> (pid_t, uid_t)? {
        guard let text = try? String(contentsOfFile: layout.directory + "/uid.lock", encoding: .utf8) else { return nil }
        let f = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard f.count >= 3, let pid = pid_t(f[0]), let start = UInt64(f[1]), let uid = uid_t(f[2]), start != 0,
            canopy_process_start_time(pid) == start
        else { return nil }
        return (pid, uid)
    }

    /// After a restart: the uid of a running container stays its own. Its holder still has the lock, or the lock is
    /// taken again (and given to a new holder).
    private func adoptLock(_ uid: uid_t?, layout: TaskLayout) -> (fd: Int32?, holder: pid_t?) {
        guard let uid, let identities else { return (nil, nil) }
        if let (pid, held) = Self.holder(layout), held == uid {
            identities.adopt(uid)
            return (nil, pid)
        }
        guard let fd = identities.readopt(uid) else { return (nil, nil) }
        if let pid = holdLock(fd, uid: uid, layout: layout) {
            close(fd)
            return (nil, pid)
        }
        return (fd, nil)
    }

    /// Ends a lock holder (and reaps it when it is this server's child).
    private static func release(_ holder: pid_t?) {
        guard let holder, holder > 0 else { return }
        kill(holder, SIGKILL)
        var status: Int32 = 0
        while waitpid(holder, &status, 0) < 0 && errno == EINTR {}
    }

    // MARK: watching the engine

    /// Follows the engine's container events for as long as the server runs; while the engine is away, reports
    /// it (`reachability`), and once it is back, settles whatever ended meanwhile. Start it only after every task
    /// of a restarted server was recovered (as the controller does): its first look removes this server's
    /// containers that no task owns.
    public func run() async {
        while !Task.isCancelled {
            do {
                let filters = #"{"type":["container"],"event":["die"],"label":["canopy.workload"]}"#
                let response = try await engine.stream("/events", query: [("filters", filters)])
                guard response.status.code == 200 else { throw BackendUnavailable("the container engine refused its event stream (\(response.status.code))") }
                setProblem(nil)
                if config.nvidiaDevices == nil, let info = try? await engine.info() {
                    nvidia.withLock { $0 = info.runtimes?["nvidia"] != nil }
                }
                // Whatever ended before the stream opened (or while it was down) is settled now.
                await reconcile()
                if swept.withLock({ s in defer { s = true }; return !s }) { await sweepOrphans() }
                var lines = LineSplitter()
                for try await chunk in response.body {
                    for line in lines.feed(chunk) {
                        struct Event: Decodable { var id: String? }
                        if let id = (try? JSONDecoder().decode(Event.self, from: Data(line)))?.id, running.withLock({ $0[id] != nil }) {
                            Task { await self.ended(id) }
                        }
                    }
                }
                if Task.isCancelled { break }
                throw BackendUnavailable("the container engine closed its event stream")
            } catch {
                if Task.isCancelled { break }
                let message = (error as? BackendUnavailable)?.message ?? "\(error)"
                if await engine.ping() == false { setProblem(message) }
                try? await Task.sleep(for: .seconds(1))
            }
        }
        cancelPumps()
    }

    private func setProblem(_ p: String?) {
        let changed = problem.withLock { old in
            defer { old = p }
            return old != p
        }
        guard changed else { return }
        if let p { logger.warning("container engine unreachable", metadata: ["problem": "\(p)"]) }
        continuation.yield(.reachability(problem: p))
    }

    /// Removes this server's containers that were made before it started and that no task owns: a server killed
    /// between a container's create and the write of its task's new state leaves one, which would otherwise run on
    /// with resources nobody accounts for. (The task itself is still pending, and is launched again.)
    private func sweepOrphans() async {
        struct Summary: Decodable {
            var Id: String
            var Names: [String]?
            var Created: Int64
            var Labels: [String: String]?
        }
        let filters = #"{"label":["canopy.root=\#(config.workloadsRoot)"]}"#
        guard let list = try? await engine.call([Summary].self, .GET, "/containers/json", query: [("all", "1"), ("filters", filters)]) else { return }
        let owned = Set(running.withLock { $0.values.map(\.containerID) })
        for c in list where !owned.contains(c.Id) && Double(c.Created) < startedAt.timeIntervalSince1970 - 1 {
            // An entry recovered by name (the engine was away then) owns its container too.
            if (c.Names ?? []).contains(where: { owned.contains(String($0.drop(while: { $0 == "/" }))) }) { continue }
            logger.notice("removing a container no task owns", metadata: ["container": "\(c.Id.prefix(12))"])
            _ = try? await engine.call(.DELETE, "/containers/\(c.Id)", query: [("force", "1"), ("v", "1")])
            // And the holder of its uid's lock, if one still runs, and its pinned mounts.
            if let w = c.Labels?["canopy.workload"], let t = c.Labels?["canopy.task"].flatMap({ Int($0) }) {
                if let (pid, _) = Self.holder(layout(w, t)) { Self.release(pid) }
                Self.unpin(layout(w, t))
            }
        }
    }

    /// Checks every container thought running; settles those that ended, or that the engine no longer has.
    private func reconcile() async {
        for (key, entry) in running.withLock({ $0 }) {
            guard let (status, body) = try? await engine.call(.GET, "/containers/\(key)/json") else { continue }
            if status == 404 {
                guard running.withLock({ $0.removeValue(forKey: key) }) != nil else { continue }
                if let fd = entry.lockFD { close(fd) }
                Self.release(entry.holder)
                if let uid = entry.uid { identities?.release(uid) }
                continuation.yield(
                    .exited(
                        TaskExit(
                            workloadID: entry.workloadID, taskIndex: entry.taskIndex, exitCode: nil,
                            reason: Reason(.taskVanished, "task \(entry.taskIndex)'s container was removed from the engine while Canopy could not see it"),
                            at: Date())))
                continue
            }
            guard let inspect = try? JSONDecoder().decode(Inspect.self, from: body) else { continue }
            // Recovered while the engine was away: now it has its id, and its uid (from the label) is locked again
            // unless a holder still has it.
            let uid = inspect.Config?.Labels?["canopy.uid"].flatMap { uid_t($0) }
            let lock = entry.holder == nil && entry.lockFD == nil && entry.uid == nil ? adoptLock(uid, layout: layout(entry.workloadID, entry.taskIndex)) : nil
            running.withLock {
                guard var r = $0.removeValue(forKey: key) else { return }
                r.containerID = inspect.Id
                if let lock {
                    r.uid = uid
                    r.lockFD = lock.fd
                    r.holder = lock.holder
                }
                $0[inspect.Id] = r
            }
            if inspect.State.Running == true {
                if pumps.withLock({ $0[inspect.Id] == nil }) { startPump(inspect.Id, layout: layout(entry.workloadID, entry.taskIndex), truncate: true) }
            } else {
                await ended(inspect.Id)
            }
        }
    }
}

// MARK: engine documents

struct CreateContainer: Encodable {
    struct MountSpec: Encodable {
        var `Type`: String
        var Source: String
        var Target: String
        var ReadOnly: Bool
    }
    struct DeviceRequest: Encodable {
        var Driver: String
        var DeviceIDs: [String]
        var Capabilities: [[String]]
    }
    struct Host: Encodable {
        var Mounts: [MountSpec]
        var Memory: Int64
        var MemorySwap: Int64
        var NanoCpus: Int64
        var PidsLimit: Int64
        var NetworkMode: String?
        var Privileged: Bool
        var SecurityOpt: [String]
        var DeviceRequests: [DeviceRequest]?
        var Init: Bool
    }
    var Image: String
    var Entrypoint: [String]
    var Cmd: [String]
    var Env: [String]
    var WorkingDir: String
    var User: String?
    var Labels: [String: String]
    var HostConfig: Host
}

struct Inspect: Decodable {
    struct State: Decodable {
        var Status: String?
        var Running: Bool?
        var OOMKilled: Bool?
        var ExitCode: Int?
        var Error: String?
        var FinishedAt: String?
        var Pid: Int?
    }
    struct Config: Decodable {
        var Labels: [String: String]?
    }
    var Id: String
    var State: State
    var Config: Config?
}

/// Splits the engine's multiplexed log stream (an 8-byte header per frame: stream, 3 zero bytes, a big-endian
/// length) into stdout (1) and stderr (2) pieces.
struct LogDemultiplexer {
    private var pending = ByteBuffer()

    mutating func feed(_ chunk: ByteBuffer, _ emit: (UInt8, ByteBuffer) -> Void) {
        var chunk = chunk
        pending.writeBuffer(&chunk)
        while pending.readableBytes >= 8 {
            let start = pending.readerIndex
            guard let stream = pending.getInteger(at: start, as: UInt8.self), let length = pending.getInteger(at: start + 4, as: UInt32.self) else { return }
            guard pending.readableBytes >= 8 + Int(length) else { break }
            pending.moveReaderIndex(forwardBy: 8)
            if let bytes = pending.readSlice(length: Int(length)) { emit(stream, bytes) }
        }
        pending.discardReadBytes()
    }
}

/// Splits a byte stream into lines (the engine's event stream is one JSON document per line).
struct LineSplitter {
    private var pending: [UInt8] = []

    mutating func feed(_ chunk: ByteBuffer) -> [[UInt8]] {
        pending += chunk.readableBytesView
        var lines: [[UInt8]] = []
        while let nl = pending.firstIndex(of: 10) {
            lines.append(Array(pending[..<nl]))
            pending.removeSubrange(...nl)
        }
        return lines
    }
}

extension ContainerRuntime: TaskPortConnector {
    /// A container's ports are reached inside its own network namespace (entered through its first process), on
    /// loopback: nothing is published on the host, the service may listen on 127.0.0.1 in the container, and this
    /// works whatever network the container has (even none). Needs the server to be root.
    public func connect(workloadID: String, taskIndex: Int, handle: String, port: Int) async throws -> Int32 {
        guard let inspect = try? await engine.call(Inspect.self, .GET, "/containers/\(handle)/json"),
            inspect.Config?.Labels?["canopy.workload"] == workloadID, inspect.Config?.Labels?["canopy.task"] == String(taskIndex),
            inspect.State.Running == true, let pid = inspect.State.Pid, pid > 0
        else {
            throw CanopyError(.unavailable, "task \(taskIndex) of workload \(workloadID) has no running container")
        }
        let fd = await Blocking.run { () -> Int32 in
            let first = canopy_connect_tcp("/proc/\(pid)/ns/net", "127.0.0.1", Int32(port), 5000)
            return first == -ECONNREFUSED ? canopy_connect_tcp("/proc/\(pid)/ns/net", "::1", Int32(port), 5000) : first
        }
        guard fd >= 0 else {
            let why = -fd == ECONNREFUSED ? "nothing listens there (yet?)" : String(cString: strerror(-fd))
            throw CanopyError(.unavailable, "cannot connect to port \(port) of task \(taskIndex): \(why)")
        }
        return fd
    }
}

extension ContainerRuntime: TaskUsageProbe {
    /// The container's CPU time, from the engine's one-shot stats.
    public func cpuSeconds(workloadID: String, taskIndex: Int, handle: String) async -> Double? {
        struct Stats: Decodable {
            struct CPU: Decodable {
                struct Usage: Decodable { var total_usage: Double? }
                var cpu_usage: Usage?
            }
            var cpu_stats: CPU?
        }
        guard let stats = try? await engine.call(Stats.self, .GET, "/containers/\(handle)/stats", query: [("stream", "false"), ("one-shot", "true")]),
            let ns = stats.cpu_stats?.cpu_usage?.total_usage
        else { return nil }
        return ns / 1e9
    }
}

extension ContainerRuntime: TaskExecRunner {
    /// `docker exec`: the engine runs the command in the container as the container's user, in its working
    /// directory, with its environment and its security profile. Docker cannot kill an exec, so ending one kills
    /// its process (the engine reports its host pid).
    public func exec(workloadID: String, taskIndex: Int, handle: String, request: ExecRequest) async throws -> any ExecSession {
        guard !request.command.isEmpty else { throw CanopyError.invalid("command", "give a command to run") }
        guard let inspect = try? await engine.call(Inspect.self, .GET, "/containers/\(handle)/json"),
            inspect.Config?.Labels?["canopy.workload"] == workloadID, inspect.Config?.Labels?["canopy.task"] == String(taskIndex),
            inspect.State.Running == true
        else {
            throw CanopyError(.unavailable, "task \(taskIndex) of workload \(workloadID) has no running container")
        }
        struct Create: Encodable {
            var AttachStdin = true
            var AttachStdout = true
            var AttachStderr = true
            var Tty: Bool
            var Cmd: [String]
            var Env: [String]
        }
        struct Created: Decodable { var Id: String }
        struct ExecState: Decodable {
            var Running: Bool
            var ExitCode: Int?
            var Pid: Int?
        }
        let created: Created
        do {
            created = try await engine.call(
                Created.self, .POST, "/containers/\(handle)/exec",
                json: Create(Tty: request.tty, Cmd: request.command, Env: request.tty ? ["TERM=xterm-256color"] : []))
        } catch let e as DockerEngine.EngineError {
            throw CanopyError(.unavailable, "the container engine refused the exec: \(e.message)")
        }
        let exec = created.Id
        let engine = engine
        let (fd, leftover) = try await engine.hijack("/exec/\(exec)/start", json: Data(#"{"Detach":false,"Tty":\#(request.tty)}"#.utf8))
        @Sendable func resize(_ rows: Int, _ columns: Int) async {
            // Right after the start the engine may not know the process yet ("process not found"): try again.
            for _ in 0..<5 {
                if let (status, _) = try? await engine.call(.POST, "/exec/\(exec)/resize", query: [("h", String(rows)), ("w", String(columns))], timeout: .seconds(5)),
                    status < 300
                { return }
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
        let session = DescriptorExecSession(
            input: fd, outputs: [(fd, false)], tty: request.tty, framing: request.tty ? .raw : .engineMultiplexed, initial: leftover,
            inputEnd: .shutdownWrite, resizer: resize
        ) {
            // The engine reports the exec's pid as its host sees it; it is killed only when this machine sees that
            // pid in the container's own cgroup (not when the engine lives in another pid namespace or elsewhere).
            if let state = try? await engine.call(ExecState.self, .GET, "/exec/\(exec)/json"), state.Running, let pid = state.Pid, pid > 0,
                let cgroup = try? String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8), cgroup.contains(handle)
            {
                kill(pid_t(pid), SIGKILL)
            }
        }
        if request.tty, let rows = request.rows, let columns = request.columns { Task { await resize(rows, columns) } }
        // The exit code: once the stream has ended, the engine may still say Running for a moment.
        Task {
            var code: Int?
            var failures = 0
            while true {
                guard let state = try? await engine.call(ExecState.self, .GET, "/exec/\(exec)/json") else {
                    // A few failed polls in a row (the engine restarting): the exit is unknown.
                    failures += 1
                    if failures >= 5 { break }
                    try? await Task.sleep(for: .seconds(1))
                    continue
                }
                failures = 0
                if !state.Running {
                    code = state.ExitCode
                    if code != nil { break }
                }
                try? await Task.sleep(for: .milliseconds(state.Running ? 250 : 50))
            }
            session.ended(code)
        }
        return session
    }
}

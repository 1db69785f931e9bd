import CanopyCore
import CanopyHost
import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// Runs workloads as jobs of an existing Slurm cluster, through its commands (`sbatch`, `squeue`, `sinfo`, `scancel`).
///
/// Slurm schedules (a `SchedulingBackend`): Canopy submits each workload as one job as soon as it may run, in its queue
/// order, and follows the jobs by polling `squeue` (one call for all jobs, a fixed text format; see `SlurmText`).
/// Each Canopy task is one Slurm task of that job (`--ntasks`), so all of them are allocated together or not at all,
/// one `scancel` stops them all, and `srun --kill-on-bad-exit` ends the gang when one fails.
///
/// Files: the workload's directory under `workloadsRoot` (which must be on a file system the compute nodes share, as
/// Slurm's own `--output` files are) holds the batch script, `job.id` (written by the job when it starts),
/// `batch.log`, and per task `task-N/{stdout.log, stderr.log, exit, work/}` as the local executor lays them out. The
/// exit files let Canopy learn how a job ended after Slurm has forgotten it (`MinJobAge`).
///
/// Jobs carry `--comment=canopy:<workload id>`: a restarted Canopy finds the jobs it submitted and never submits a
/// workload twice.
public actor SlurmExecutor: SchedulingBackend {
    /// How it is set up.
    public struct Configuration: Sendable {
        /// Where workload directories go; shared with the compute nodes.
        public var workloadsRoot: String
        /// How often `squeue` and `sinfo` are asked, in seconds.
        public var pollInterval: Double
        /// The user jobs are submitted as when the server runs as root (never root itself).
        public var taskUser: String
        /// Per tenant, the account its jobs are submitted as instead (when the server runs as root), so tenants'
        /// jobs cannot reach each other's files.
        public var tenantUsers: [String: String]
        /// The server's environment, for PATH and SLURM_CONF.
        public var environment: [String: String]

        /// Creates a configuration.
        public init(
            workloadsRoot: String, pollInterval: Double = 2, taskUser: String = "nobody", tenantUsers: [String: String] = [:],
            environment: [String: String] = ProcessInfo.processInfo.environment
        ) {
            self.tenantUsers = tenantUsers
            self.workloadsRoot = workloadsRoot
            self.pollInterval = pollInterval
            self.taskUser = taskUser
            self.environment = environment
        }
    }

    /// A job Canopy follows.
    struct Track {
        var workloadID: String
        var tasks: Int
        /// When Canopy learned of it; a poll that began earlier may not list it yet.
        var since: Date
        var started = false
        var reason: String?
        var stopRequested = false
        /// When Slurm started it (squeue's start time), for time limits counted from there.
        var startedAt: Date?
        /// The nodes of its allocation, once it started: the only nodes its tasks may say they run on.
        var nodes: [String] = []
    }

    let config: Configuration
    let command: Command
    private let logger: Logger
    private let runAs: (uid: uid_t, gid: gid_t)?
    /// The tenants with accounts of their own, resolved.
    private let tenantRunAs: [String: (uid: uid_t, gid: gid_t)]
    private let continuation: AsyncStream<BackendEvent>.Continuation
    /// Waits, starts, exits, reachability and inventory, as the polls find them.
    public nonisolated let events: AsyncStream<BackendEvent>
    /// What it cannot isolate: tenants that share the task user share their files.
    public nonisolated let limitations: [String]
    /// Tasks it runs are Slurm jobs.
    public nonisolated var kind: RuntimeKind { .slurm }

    var tracks: [String: Track] = [:]
    /// Nodes' numeric addresses, as `scontrol show node` gave them.
    var nodeAddresses: [String: String] = [:]
    private var byWorkload: [String: String] = [:]
    /// Canopy's jobs in the first `squeue` answer, by workload: those a previous server submitted, for idempotent
    /// submission and recovery. Jobs this server submits are in `byWorkload`.
    private var tagged: [String: SlurmText.Job] = [:]
    /// The tag of each job in `tagged`, by job id.
    private var tagOfJob: [String: String] = [:]
    private var primed = false
    private var problem: String?
    private var views: [NodeView] = []

    /// Checks that the Slurm commands are there and creates the executor.
    public init(configuration: Configuration, logger: Logger = Logger(label: "canopy.slurm")) throws {
        config = configuration
        self.logger = logger
        command = Command(serverEnvironment: configuration.environment)
        let path = command.environment["PATH"] ?? ""
        for tool in ["sbatch", "squeue", "sinfo", "scancel", "srun"] where TaskUser.findProgram(tool, path: path) == nil {
            throw CanopyError.invalid("executor", "--executor slurm needs the Slurm commands; \(tool) is not on PATH (\(path))")
        }
        try FileManager.default.createDirectory(atPath: configuration.workloadsRoot, withIntermediateDirectories: true)
        // The jobs' user reaches its workload's directory by its full path (`canopy serve` runs with umask 077).
        chmod(configuration.workloadsRoot, 0o711)
        // Jobs are submitted as the task user when the server is root, so they never run as root.
        runAs = try TaskUser.resolve(configuration.taskUser)
        var resolved: [String: (uid: uid_t, gid: gid_t)] = [:]
        for (tenant, user) in configuration.tenantUsers {
            guard let id = try TaskUser.resolve(user) else { continue }
            guard id.uid != 0 else { throw CanopyError.invalid("slurm-tenant-user", "tenant \(tenant)'s jobs cannot run as root") }
            resolved[tenant] = id
        }
        tenantRunAs = resolved
        limitations =
            runAs == nil
            ? []
            : [
                "Slurm jobs of tenants without an account of their own (--slurm-tenant-user TENANT=USER) all run as \(configuration.taskUser): "
                    + "they can read and change each other's workload files"
            ]
        (events, continuation) = AsyncStream<BackendEvent>.makeStream()
    }

    // MARK: SchedulingBackend

    /// The cluster's nodes, as `sinfo` reports them.
    public func nodes() async throws -> [Node] {
        await refreshInventory()
        return views.map(\.node)
    }

    /// Submits the workload as one job (or returns the job it already has).
    public func submit(_ s: WorkloadSubmission) async throws -> String {
        if let id = byWorkload[s.workloadID] { return id }
        if !primed { await poll() }
        guard primed else { throw BackendUnavailable(problem ?? "Slurm has not answered yet") }
        // Submitted before a crash, before Canopy could record the job id: adopt it rather than submit it again.
        if let job = tagged[SlurmText.tag(workloadID: s.workloadID, attempt: s.attempt)] {
            adopt(job.id, workloadID: s.workloadID, tasks: s.spec.tasks, since: .distantPast)
            return job.id
        }
        let directory = config.workloadsRoot + "/" + s.workloadID
        // The job writes its id there as it starts, as the job's account: so the file is only believed for digits
        // naming a job Slurm either lists with this start's tag, or has forgotten.
        if let id = WorkloadDirectory.readSmall(root: config.workloadsRoot, workloadID: s.workloadID, name: SlurmText.jobIDFile(attempt: s.attempt))?
            .trimmingCharacters(in: .whitespacesAndNewlines), !id.isEmpty, try await belongs(id, tag: SlurmText.tag(workloadID: s.workloadID, attempt: s.attempt))
        {
            // ... and already ran, long enough ago for Slurm to have forgotten it: its exit files tell how it ended.
            adopt(id, workloadID: s.workloadID, tasks: s.spec.tasks, since: .distantPast)
            return id
        }
        let owner = tenantRunAs[s.tenant] ?? runAs
        let workdir = try prepare(s, directory: directory, owner: owner)
        let script = directory + "/job.sh"
        var sandbox: SlurmText.ImageSandbox?
        if let image = s.image {
            // `/workspace` is the task's own, whatever the image has there (a link would turn the bind elsewhere).
            let top = try RootFilesystem.topLevel(of: image.rootfs).filter { $0.name != "workspace" }
            try Self.checkTargets(s.mounts, image: image.rootfs, top: top)
            sandbox = SlurmText.ImageSandbox(
                rootfs: image.rootfs, entries: top, tmpfs: RootFilesystem.directories(["var/tmp", "run"], in: image.rootfs), env: image.env,
                nodeFiles: RootFilesystem.files(["etc/resolv.conf", "etc/hosts"], in: image.rootfs), mounts: s.mounts, asRoot: s.allowRoot)
        }
        let text = SlurmText.batchScript(
            workloadID: s.workloadID, directory: directory, workdir: workdir, spec: s.spec, extraEnv: [:], sandbox: sandbox, attempt: s.attempt,
            taskPlaceholders: s.taskPlaceholders)
        // The scripts are the server's, written through the directory's descriptor: the directory is the job
        // account's, and a name in it may be a link by now.
        let dir = try FileTree.openDirectory(directory)
        try FileTree.writeFile(text, named: "job.sh", in: dir, mode: 0o755)
        // What `canopy exec` runs a command through in a task (see `exec(...)`).
        try FileTree.writeFile(
            SlurmText.execScript(workloadID: s.workloadID, spec: s.spec, extraEnv: [:], sandbox: sandbox), named: "exec.sh", in: dir, mode: 0o755)
        let gpuType = s.spec.resources.gpus > 0 ? gpuType(for: s.spec.resources.gpuModel) : nil
        var argv =
            ["sbatch"]
            + SlurmText.sbatchOptions(workloadID: s.workloadID, spec: s.spec, partition: s.pool, gpuType: gpuType, directory: directory, attempt: s.attempt)
            + [script]
        if let owner { argv = ["setpriv", "--reuid=\(owner.uid)", "--regid=\(owner.gid)", "--init-groups"] + argv }
        // An app's secret reaches the job through sbatch's environment (Slurm passes it on to the job), never a file.
        let r = try await command.run(argv, extraEnvironment: s.secretEnv)
        guard r.ok, let id = String(decoding: r.stdout, as: UTF8.self).split(whereSeparator: { $0 == ";" || $0 == "\n" }).first.map(String.init), !id.isEmpty
        else {
            let complaint = SlurmText.complaint(r.stderr)
            if SlurmText.isUnreachable(r.stderr) {
                setProblem("sbatch: \(complaint)")
                throw BackendUnavailable(complaint)
            }
            throw CanopyError(.invalidArgument, "Slurm refused the job: \(complaint)")
        }
        adopt(id, workloadID: s.workloadID, tasks: s.spec.tasks, since: Date())
        return id
    }

    /// Refuses mount targets the sandbox could not make: the image's tree is read-only, so a target must be below
    /// `/workspace`, a top-level directory the image lacks, or a directory the image has (reached without links).
    static func checkTargets(_ mounts: [ResolvedMount], image rootfs: String, top: [ImageRootEntry]) throws {
        for (i, m) in mounts.enumerated() {
            let parts = m.target.split(separator: "/").map(String.init)
            guard let first = parts.first, first != "workspace" else { continue }
            guard let entry = top.first(where: { $0.name == first }) else { continue }
            guard entry.kind == .directory, !RootFilesystem.directories([parts.joined(separator: "/")], in: rootfs).isEmpty else {
                throw CanopyError.invalid(
                    "mounts[\(i)].target",
                    "\(m.target) cannot be mounted in this image: /\(first) is the image's (read-only) and \(m.target) is not a directory in it; "
                        + "mount below /workspace or at a new top-level directory")
            }
        }
    }

    /// Creates the task directories (the job's user owns them), stages inputs; returns the working directory
    /// relative to each task's `work`. On a restart the directory and all in it are the job account's since the
    /// last start, so nothing in it is followed (see `TaskLayout.prepareForJob`); the workloads root is the
    /// server's, so the workload directory itself cannot be swapped.
    private func prepare(_ s: WorkloadSubmission, directory: String, owner runAs: (uid: uid_t, gid: gid_t)?) throws -> String {
        if mkdir(directory, 0o700) != 0 && errno != EEXIST {
            throw CanopyError(.internal, "cannot create \(directory): \(String(cString: strerror(errno)))")
        }
        let dir = try FileTree.openDirectory(directory)
        var relative = ""
        for i in 0..<s.spec.tasks {
            let layout = TaskLayout(root: config.workloadsRoot, workloadID: s.workloadID, index: i)
            guard let workdir = layout.resolve(workdir: s.spec.workdir) else {
                throw CanopyError.invalid("workdir", "workdir \"\(s.spec.workdir ?? "")\" leaves the task's directory")
            }
            relative = workdir.count > layout.work.count ? String(workdir.dropFirst(layout.work.count + 1)) : ""
            // Slurm opens the log files as the job's user, and the task's shell writes its exit file. Private to
            // that user, whatever the server's umask: another tenant's jobs may run as another account.
            try layout.prepareForJob(in: dir, workdir: s.spec.workdir, inputs: s.inputs, owner: runAs)
        }
        unlinkat(dir.fd, "batch.exit", 0)
        if let runAs { fchown(dir.fd, runAs.uid, runAs.gid) }
        fchmod(dir.fd, 0o700)
        return relative
    }

    /// Whether job `id` (digits only) may be taken for the start tagged `tag`: Slurm lists it with that tag, or no
    /// longer lists it at all. Throws `BackendUnavailable` when Slurm cannot be asked.
    private func belongs(_ id: String, tag: String) async throws -> Bool {
        guard id.count <= 20, id.allSatisfy({ $0.isASCII && $0.isNumber }) else { return false }
        let r = try await command.run(["squeue", "-h", "-j", id, "-o", "%k"])
        guard r.ok else {
            if SlurmText.isUnreachable(r.stderr) { throw BackendUnavailable(SlurmText.complaint(r.stderr)) }
            return true  // "Invalid job id specified": Slurm has forgotten it.
        }
        let comment = String(decoding: r.stdout, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return comment.isEmpty || comment == SlurmText.commentPrefix + tag
    }

    /// Cancels the job (every task of the workload): SIGTERM first when it runs, Slurm's own cancel after `grace`.
    public func stop(workloadID: String, taskIndex: Int, handle backendID: String, grace: Double) async {
        // Only a job of this workload, by an id that is one.
        guard backendID.allSatisfy({ $0.isASCII && $0.isNumber }), !backendID.isEmpty else { return }
        if let t = tracks[backendID], t.workloadID != workloadID { return }
        tracks[backendID]?.stopRequested = true
        guard let t = tracks[backendID], t.started, grace > 0 else {
            _ = try? await command.run(["scancel", backendID])
            return
        }
        // SIGTERM to its processes (the batch step's too: a single task runs there), then Slurm's own cancel
        // (SIGTERM, SIGKILL after KillWait) once the grace is over. A single task handles the SIGTERM within the
        // grace period. A gang runs in an srun step, which Slurm 22.05 cancels on SIGTERM (signalled through srun
        // or directly): its tasks are killed without the grace period.
        _ = try? await command.run(["scancel", "--signal=TERM", "--full", backendID])
        let deadline = Date().addingTimeInterval(grace)
        while Date() < deadline, tracks[backendID] != nil {
            try? await Task.sleep(for: .milliseconds(100))
        }
        if tracks[backendID] != nil { _ = try? await command.run(["scancel", backendID]) }
    }

    /// Follows a job submitted before a restart, if Slurm (or its exit files) still knows it.
    public func recover(workloadID: String, taskIndex: Int, handle backendID: String?) async -> TaskRecovery {
        guard let backendID else { return .vanished }
        if tracks[backendID] != nil { return .running }
        if !primed { await poll() }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: config.workloadsRoot + "/" + workloadID)) ?? []
        let ranOnce = names.contains { $0.hasPrefix("job.") && $0.hasSuffix(".id") }
        let tag = tagOfJob[backendID]
        if let tag, tag != workloadID, !tag.hasPrefix(workloadID + "#") { return .vanished }
        guard !primed || tag != nil || ranOnce else { return .vanished }
        // Slurm still knows it, cannot be asked now, or it ran and left its files: follow it. The next poll reports
        // what became of it, every task at once (a job Slurm has forgotten ends from its exit files).
        adopt(backendID, workloadID: workloadID, tasks: taskCount(workloadID), since: .distantPast)
        return .running
    }

    /// Deletes the workload's directory (see `WorkloadDirectory.remove`).
    public nonisolated func removeFiles(workloadID: String) async throws {
        try WorkloadDirectory.remove(root: config.workloadsRoot, workloadID: workloadID)
    }

    /// Writes the notice into the task's directory (see `TaskLayout.post`).
    public nonisolated func post(_ notice: TaskNotice, workloadID: String, taskIndex: Int) async {
        TaskLayout(root: config.workloadsRoot, workloadID: workloadID, index: taskIndex).post(notice)
    }

    /// The task's log file, as the job writes it.
    public nonisolated func logPath(workloadID: String, taskIndex: Int, stream: String) -> String {
        let l = TaskLayout(root: config.workloadsRoot, workloadID: workloadID, index: taskIndex)
        return stream == "stderr" ? l.stderr : l.stdout
    }

    /// Copies a finished task's outputs from its directory on the shared file system.
    public func collectOutputs(workloadID: String, taskIndex: Int, spec: WorkloadSpec, outputs: [StagedOutput]) async throws {
        try TaskLayout(root: config.workloadsRoot, workloadID: workloadID, index: taskIndex).collect(outputs, workdir: spec.workdir, readableBy: runAs?.uid)
    }

    /// Polls `squeue` and `sinfo` until cancelled.
    public func run() async {
        while !Task.isCancelled {
            await poll()
            try? await Task.sleep(for: .seconds(config.pollInterval))
        }
    }

    // MARK: polling

    /// One look at every job (`squeue`) and every node (`sinfo`); reports what changed.
    func poll() async {
        let began = Date()
        let r: Command.Result
        do {
            r = try await command.run(["squeue", "-h", "-a", "-t", "all", "-o", SlurmText.squeueFormat])
        } catch {
            setProblem("squeue could not be run: \(error)")
            return
        }
        guard r.ok else {
            setProblem("squeue: \(SlurmText.complaint(r.stderr))")
            return
        }
        let counts = refresh(SlurmText.jobs(r.stdout), began: began)
        primed = true
        setProblem(nil)
        await refreshInventory(jobsPerNode: counts)
    }

    /// Applies one `squeue` answer; returns how many jobs run on each node. Internal for the benchmark.
    func refresh(_ jobs: [SlurmText.Job], began: Date) -> [String: Int] {
        var seen = Set<String>()
        var perNode: [String: Int] = [:]
        for job in jobs {
            if SlurmText.hasStarted(job.state), !job.nodes.isEmpty {
                for host in SlurmText.hostnames(job.nodes) { perNode[host, default: 0] += 1 }
            }
            if !primed, let tag = job.tag {
                tagged[tag] = job
                tagOfJob[job.id] = tag
            }
            guard var t = tracks[job.id] else { continue }
            seen.insert(job.id)
            if job.state == "PENDING" || job.state == "CONFIGURING" || job.state == "REQUEUED" || job.state == "REQUEUE_HOLD" {
                if t.reason != job.reason {
                    t.reason = job.reason
                    continuation.yield(.waiting(workloadID: t.workloadID, reason: SlurmText.pendingReason(job.reason, jobID: job.id)))
                }
                tracks[job.id] = t
            } else if SlurmText.hasStarted(job.state) {
                if !t.started {
                    t.started = true
                    t.startedAt = SlurmText.date(job.start)
                    t.nodes = SlurmText.hostnames(job.nodes)
                    continuation.yield(
                        .started(workloadID: t.workloadID, placements: placements(job.nodes, tasks: t.tasks), at: SlurmText.date(job.start) ?? Date()))
                }
                tracks[job.id] = t
            } else if SlurmText.isTerminal(job.state) {
                finish(job.id, t, state: job.state, nodes: job.nodes, at: SlurmText.date(job.end))
            }
        }
        for (id, t) in tracks where !seen.contains(id) && t.since < began {
            // Slurm no longer lists it: it ended more than MinJobAge ago, or was purged. Its files say how it ended.
            finish(id, t, state: nil, nodes: "", at: nil)
        }
        return perNode
    }

    private func finish(_ id: String, _ t: Track, state: String?, nodes: String, at: Date?) {
        if !t.started, !nodes.isEmpty {
            continuation.yield(.started(workloadID: t.workloadID, placements: placements(nodes, tasks: t.tasks), at: at ?? Date()))
        }
        var ended = exits(workloadID: t.workloadID, jobID: id, tasks: t.tasks, state: state, nodes: nodes, at: at)
        if t.stopRequested {
            // Canopy asked for the stop: the controller says why; a task without a status was terminated.
            for i in ended.indices {
                ended[i].reason = nil
                if ended[i].exitCode == nil { ended[i].exitCode = 128 + Int(SIGTERM) }
            }
        }
        for e in ended { continuation.yield(.exited(e)) }
        tracks.removeValue(forKey: id)
        byWorkload.removeValue(forKey: t.workloadID)
    }

    /// How each task of a job ended, from its exit file and the job's final state (nil: Slurm no longer knows it).
    private func exits(workloadID: String, jobID: String, tasks: Int, state: String?, nodes: String, at: Date?) -> [TaskExit] {
        let layouts = (0..<tasks).map { TaskLayout(root: config.workloadsRoot, workloadID: workloadID, index: $0) }
        let codes = layouts.map { $0.readExit() }
        let directory = config.workloadsRoot + "/" + workloadID
        let batchText = WorkloadDirectory.readSmall(root: config.workloadsRoot, workloadID: workloadID, name: "batch.exit")
        // Written as the job's account: only an exit status a shell can have is believed.
        let batchCode = batchText.flatMap { Int($0.split(separator: " ").last?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") }.flatMap {
            (0...255).contains($0) ? $0 : nil
        }
        let when =
            at ?? layouts.compactMap { try? FileManager.default.attributesOfItem(atPath: $0.exitFile)[.modificationDate] as? Date }.max() ?? Date()
        var stateReason = state.flatMap { SlurmText.endReason(state: $0, jobID: jobID, nodes: nodes) }
        if stateReason == nil, codes.contains(where: { ($0 ?? 0) != 0 }) || state == "FAILED" {
            let logs = ([directory + "/batch.log"] + layouts.map(\.stderr)).map { Self.tail($0) }.joined(separator: "\n")
            if SlurmText.mentionsOOM(logs) {
                stateReason = Reason(.outOfMemory, "a task of Slurm job \(jobID) was killed for using more memory than it asked for")
            }
        }
        let firstFailure = codes.enumerated().first { ($0.element ?? 0) != 0 }
        return codes.enumerated().map { i, code in
            var exit = TaskExit(workloadID: workloadID, taskIndex: i, exitCode: code, at: when)
            if let stateReason {
                exit.reason = stateReason
            } else if code == nil {
                if state == "COMPLETED" {
                    exit.exitCode = 0
                } else if let (k, c) = firstFailure {
                    exit.reason = Reason(.peerTaskFailed, "task \(i) was stopped because task \(k) failed with exit code \(c ?? -1)")
                } else if state == nil && batchCode == nil {
                    exit.reason = Reason(
                        .taskVanished, "Slurm no longer knows job \(jobID) (it ended too long ago, or was purged) and task \(i) left no exit status")
                } else {
                    let log = Self.tail(directory + "/batch.log").split(separator: "\n").last.map(String.init) ?? ""
                    exit.exitCode = batchCode
                    exit.reason = Reason(.launchFailed, "Slurm job \(jobID) ended (\(state ?? "gone")) before task \(i) ran\(log.isEmpty ? "" : ": \(log)")")
                }
            }
            return exit
        }
    }

    /// The last 8 KiB of a log the job wrote: a regular file only, opened without following a link or blocking.
    private static func tail(_ path: String) -> String {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { return "" }
        let start = st.st_size > 8192 ? st.st_size - 8192 : 0
        var buffer = [UInt8](repeating: 0, count: 8192)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 8192, start) }
        return n > 0 ? String(decoding: buffer[0..<n], as: UTF8.self) : ""
    }

    private func placements(_ nodes: String, tasks: Int) -> [BackendPlacement] {
        let hosts = SlurmText.hostnames(nodes)
        return (0..<tasks).map { i in
            // Block distribution: with one node per task, task i runs on the i-th; otherwise Slurm packs them and
            // does not say which went where, so each task shows the allocation's node list.
            let node = hosts.count == tasks ? hosts[i] : hosts.count == 1 ? hosts[0] : nodes
            return BackendPlacement(taskIndex: i, node: node)
        }
    }

    private func refreshInventory(jobsPerNode: [String: Int] = [:]) async {
        let fields = SlurmText.sinfoFields.map { "\($0):|" }.joined(separator: ",")
        guard let r = try? await command.run(["sinfo", "-h", "-N", "-O", fields]), r.ok else { return }
        var fresh = SlurmText.nodes(String(decoding: r.stdout, as: UTF8.self))
        for i in fresh.indices { fresh[i].tasks = jobsPerNode[fresh[i].node.name] ?? 0 }
        views = fresh
        continuation.yield(.inventory(fresh))
    }

    // MARK: bookkeeping

    private func adopt(_ id: String, workloadID: String, tasks: Int, since: Date) {
        if tracks[id] == nil { tracks[id] = Track(workloadID: workloadID, tasks: tasks, since: since) }
        byWorkload[workloadID] = id
        if let tag = tagOfJob.removeValue(forKey: id) { tagged.removeValue(forKey: tag) }
    }

    private func setProblem(_ p: String?) {
        guard problem != p else { return }
        if p != nil, problem != nil { return }
        problem = p
        continuation.yield(.reachability(problem: p))
    }

    /// The GRES type to ask for: the first GPU type in the inventory matching the requested model (nil: any type).
    private func gpuType(for model: String?) -> String? {
        guard let model, !model.isEmpty else { return nil }
        let types = views.flatMap(\.node.gpus).map(\.model)
        return types.first { GPU(index: 0, model: $0).matches(model: model) } ?? model
    }

    /// How many tasks a workload has: its task directories.
    private func taskCount(_ workloadID: String) -> Int {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: config.workloadsRoot + "/" + workloadID)) ?? []
        return max(1, names.filter { $0.hasPrefix("task-") }.count)
    }
}

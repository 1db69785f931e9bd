import Foundation

/// Which runtime runs a task. It is recorded with the task (`TaskStatus.runtime`), so that stop, recover and logs
/// reach the runtime that owns each task, also after a restart.
public struct RuntimeKind: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    /// A supervised process on the host (`canopy-shim`, cgroups, a per-task uid).
    public static let process = RuntimeKind(rawValue: "process")
    /// A container of the host's container engine.
    public static let container = RuntimeKind(rawValue: "container")
    /// A job of a Slurm cluster (which itself runs a process or a container on its node).
    public static let slurm = RuntimeKind(rawValue: "slurm")
    public var description: String { rawValue }
}

/// How much a running task uses, for idle detection (an interactive workload that computes is not idle).
public protocol TaskUsageProbe: Sendable {
    /// The CPU time the task has used so far, in seconds (all its processes); nil when it cannot be read.
    func cpuSeconds(workloadID: String, taskIndex: Int, handle: String) async -> Double?
}

/// How busy the GPUs of a node are, for idle detection.
public protocol GPUUtilizationProbe: Sendable {
    /// Utilisation in percent by GPU index on `node` (nvidia-smi's utilization.gpu); nil where it cannot be read.
    func gpuUtilization(node: String) async -> [Int: Int]?
}

/// Opens connections to the ports a running task serves, for the proxy (and port forwarding): only a listener that
/// belongs to the task itself is ever connected to, so another tenant's task that grabs the port first cannot
/// receive its traffic.
public protocol TaskPortConnector: Sendable {
    /// A connected TCP socket to `port` of the running task `handle`, as a file descriptor the caller then owns.
    /// Throws `CanopyError` (`.unavailable`) naming why when nothing of the task's listens there.
    func connect(workloadID: String, taskIndex: Int, handle: String, port: Int) async throws -> Int32
}

/// A runtime whose tasks run under a time limit of its own (a Slurm job's), which an interactive workload's lease
/// becomes: extending the lease extends the limit without a restart.
public protocol TimeLimitedRuntime: Sendable {
    /// The lease of the job `handle` changed: a running job now ends at `expiresAt` (nil: no limit); one still
    /// waiting in the backend's queue gets `lease` from its start. Throws `CanopyError` naming why the backend
    /// refused (the lease is then left as it was).
    func setTimeLimit(workloadID: String, handle: String, lease: Lease, expiresAt: Date?) async throws
}

/// What a runtime gives back for a task it started.
public struct LaunchedTask: Sendable, Hashable {
    /// The runtime's handle for it: a pid, a container id.
    public var handle: String

    /// Creates the result of a launch.
    public init(handle: String) {
        self.handle = handle
    }
}

/// The nodes of a host or a cluster, with their capacity. A host has one inventory, and so one GPU ledger, shared
/// by every runtime that runs tasks on it.
public protocol NodeInventory: Sendable {
    /// The nodes, with their capacity.
    func nodes() async throws -> [Node]
}

/// What every runtime does for the tasks it owns.
public protocol TaskRuntime: Sendable {
    /// Which runtime this is; tasks it starts carry it.
    var kind: RuntimeKind { get }
    /// Asks a task to stop: SIGTERM (or the runtime's equivalent), then a forced kill after `grace` seconds.
    func stop(workloadID: String, taskIndex: Int, handle: String, grace: Double) async
    /// Looks for a task started before a restart and adopts it if it still runs.
    func recover(workloadID: String, taskIndex: Int, handle: String?) async -> TaskRecovery
    /// The file holding a task's output stream ("stdout" or "stderr"); it may not exist yet. Every runtime delivers
    /// a task's output to this file (a container runtime copies the engine's log stream into it), so readers have
    /// one form to read, with byte offsets, whichever runtime ran the task.
    func logPath(workloadID: String, taskIndex: Int, stream: String) -> String
    /// Tells a running task something through its files: writes `.canopy/NAME` in its working directory (the
    /// container's `/workspace/.canopy/NAME`), and appends `logLine`, if any, to its standard output log. Best
    /// effort: a task that has no directory (yet) is not told.
    func post(_ notice: TaskNotice, workloadID: String, taskIndex: Int) async
    /// Deletes a workload's files (its directory, task directories, logs) once it is removed; no task of it may
    /// run. Throws `CanopyError` naming what could not be removed.
    func removeFiles(workloadID: String) async throws
    /// Copies a finished task's outputs out of its directory (replacing a destination only when asked to);
    /// throws a message-bearing error naming the output that could not be copied.
    func collectOutputs(workloadID: String, taskIndex: Int, spec: WorkloadSpec, outputs: [StagedOutput]) async throws
    /// What the runtime reports: task exits; reachability of its engine; for backends that schedule for
    /// themselves, waits, starts and inventory.
    var events: AsyncStream<BackendEvent> { get }
    /// Work the runtime does for as long as the server runs (polling, watching its engine); returns when cancelled.
    func run() async
    /// Notices about what the runtime cannot do here (e.g. no cgroups), for the log; empty when all is well.
    var limitations: [String] { get }
}

/// A runtime that runs what Canopy's scheduler placed, where it placed it.
public protocol PlacedRuntime: TaskRuntime {
    /// Starts a task; throws `BackendUnavailable` when its engine cannot be reached (the task may be tried again),
    /// any other error when the task cannot start.
    func launch(_ task: TaskLaunch) async throws -> LaunchedTask
}

/// A backend with its own scheduler (Slurm): Canopy hands it whole workloads in queue order, and it reports through
/// `events` why they wait, when they start and how they end.
public protocol SchedulingBackend: TaskRuntime, NodeInventory {
    /// Hands a whole workload over; returns its handle (a job id), shared by all its tasks. Idempotent: a workload
    /// the backend already has (say, submitted just before a crash) is not submitted again; its existing handle is
    /// returned. Throws `BackendUnavailable` when the backend cannot be reached, any other error when it refuses it.
    func submit(_ submission: WorkloadSubmission) async throws -> String
}

/// Something Canopy tells a running task (see `TaskRuntime.post`): the lease file, say.
public struct TaskNotice: Sendable, Hashable {
    /// The file's name under the working directory's `.canopy/`: letters, digits, '-', '_' and '.'.
    public var name: String
    /// What the file holds.
    public var contents: String
    /// A line for the task's output log, or nil.
    public var logLine: String?

    /// Creates a notice.
    public init(name: String, contents: String, logLine: String? = nil) {
        self.name = name
        self.contents = contents
        self.logLine = logLine
    }
}

/// A command to run inside a running task (`canopy exec`).
public struct ExecRequest: Sendable, Hashable {
    /// The command and its arguments (run through the task's PATH).
    public var command: [String]
    /// Whether it gets a pseudo-terminal (its output is then one stream, and it may be resized).
    public var tty: Bool
    /// The terminal's size at start, where known.
    public var rows: Int?
    public var columns: Int?
    /// The workload's working directory (its spec's `workdir`), where the command starts.
    public var workdir: String?

    /// Creates a request.
    public init(command: [String], tty: Bool = false, rows: Int? = nil, columns: Int? = nil, workdir: String? = nil) {
        self.command = command
        self.tty = tty
        self.rows = rows
        self.columns = columns
        self.workdir = workdir
    }
}

/// What a running exec writes: bytes on its standard output or error (with a terminal, everything is stdout).
public enum ExecOutput: Sendable, Hashable {
    case stdout([UInt8])
    case stderr([UInt8])
}

/// A command running inside a task. Its output ends (the stream finishes) when the command has closed its
/// output; `exitCode()` then says how it ended.
public protocol ExecSession: Sendable {
    /// Its output, in order, with backpressure: the command blocks on writes while nobody reads.
    var output: AsyncStream<ExecOutput> { get }
    /// Sends bytes to its standard input (waits while the command does not read).
    func write(_ bytes: [UInt8]) async
    /// Closes its standard input (end of file; with a terminal, ^D).
    func closeInput() async
    /// Sets its terminal's size (no-op without a terminal).
    func resize(rows: Int, columns: Int) async
    /// Waits for it to end: its exit code, or 128 + the signal that ended it; nil when that cannot be known.
    func exitCode() async -> Int?
    /// Ends it (and what it started in its session) if it still runs: the client went away.
    func terminate() async
}

/// Runs commands inside running tasks, as the task's user and in its view of the machine: inside its container,
/// or, for a process, in its namespaces, cgroups and working directory.
public protocol TaskExecRunner: Sendable {
    /// Starts `request` in the running task `handle`; throws `CanopyError` (`.unavailable` when the task no
    /// longer runs, `.invalid` for a request the runtime cannot run).
    func exec(workloadID: String, taskIndex: Int, handle: String, request: ExecRequest) async throws -> any ExecSession
}

import Foundation

/// One task to start, already placed.
public struct TaskLaunch: Sendable, Hashable {
    /// The workload.
    public var workloadID: String
    /// Its tenant.
    public var tenant: String
    /// What it runs.
    public var spec: WorkloadSpec
    /// Which task.
    public var taskIndex: Int
    /// The node chosen.
    public var node: String
    /// The GPU indices given to it on that node.
    public var gpus: [Int]
    /// Files to copy into the task's directory before it starts.
    public var inputs: [StagedInput]

    /// Creates a launch.
    public init(workloadID: String, tenant: String, spec: WorkloadSpec, taskIndex: Int, node: String, gpus: [Int], inputs: [StagedInput] = []) {
        self.workloadID = workloadID
        self.tenant = tenant
        self.spec = spec
        self.taskIndex = taskIndex
        self.node = node
        self.gpus = gpus
        self.inputs = inputs
    }
}

/// An input resolved to a local file or directory.
public struct StagedInput: Sendable, Hashable {
    /// The local file or directory to copy (from the data store).
    public var localSource: String
    /// Where it goes, as the spec says it (relative to the working directory, or absolute inside the task's directory).
    public var path: String

    /// Creates a staged input.
    public init(localSource: String, path: String) {
        self.localSource = localSource
        self.path = path
    }
}

/// An output resolved to a local destination.
public struct StagedOutput: Sendable, Hashable {
    /// What to copy, as the spec says it.
    public var path: String
    /// The local path it goes to (in the data store).
    public var localDestination: String
    /// The destination as the user named it, for messages.
    public var destination: String
    /// Whether an existing destination is replaced.
    public var overwrite: Bool

    /// Creates a staged output.
    public init(path: String, localDestination: String, destination: String, overwrite: Bool) {
        self.path = path
        self.localDestination = localDestination
        self.destination = destination
        self.overwrite = overwrite
    }
}

/// How a task ended, as the backend saw it.
public struct TaskExit: Sendable, Hashable {
    /// The workload.
    public var workloadID: String
    /// Which task.
    public var taskIndex: Int
    /// Exit code (128+N for signal N); nil if unknown.
    public var exitCode: Int?
    /// A reason when the backend knows more than the code (out of memory, vanished).
    public var reason: Reason?
    /// When it ended.
    public var at: Date

    /// Creates an exit report.
    public init(workloadID: String, taskIndex: Int, exitCode: Int?, reason: Reason? = nil, at: Date) {
        self.workloadID = workloadID
        self.taskIndex = taskIndex
        self.exitCode = exitCode
        self.reason = reason
        self.at = at
    }
}

/// What the backend found for a task it was running before a restart.
public enum TaskRecovery: Sendable, Hashable {
    /// Still running: adopted, and its exit will be reported as events.
    case running
    /// Ended while nobody watched.
    case exited(TaskExit)
    /// Gone without a trace.
    case vanished
}

/// Runs tasks: the seam between the services and a backend (local processes, Slurm, ...).
public protocol Executor: Sendable {
    /// The nodes it can run tasks on, with their capacity.
    func nodes() async throws -> [Node]
    /// Starts a task; returns the backend's handle for it (a pid, a job id).
    func launch(_ task: TaskLaunch) async throws -> String
    /// Asks a task to stop: SIGTERM (or the backend's equivalent), then a forced kill after `grace` seconds.
    func stop(workloadID: String, taskIndex: Int, backendID: String, grace: Double) async
    /// Looks for a task started before a restart and adopts it if it still runs.
    func recover(workloadID: String, taskIndex: Int, backendID: String?) async -> TaskRecovery
    /// The file holding a task's output stream ("stdout" or "stderr"); it may not exist yet.
    func logPath(workloadID: String, taskIndex: Int, stream: String) -> String
    /// Copies a finished task's outputs out of its directory (replacing a destination only when asked to);
    /// throws a message-bearing error naming the output that could not be copied.
    func collectOutputs(workloadID: String, taskIndex: Int, spec: WorkloadSpec, outputs: [StagedOutput]) async throws
    /// Reports of tasks that ended.
    var exits: AsyncStream<TaskExit> { get }
    /// A notice about what the backend cannot do here (e.g. no cgroups), for the log; nil when all is well.
    var limitations: [String] { get }
}

/// The time source; tests pass a manual one.
public struct Clock: Sendable {
    /// Now.
    public var now: @Sendable () -> Date

    /// Creates a clock.
    public init(now: @escaping @Sendable () -> Date) { self.now = now }

    /// The system clock.
    public static let system = Clock { Date() }
}

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
    /// The spec's mounts, resolved to paths on the host.
    public var mounts: [ResolvedMount]
    /// The engine's reference of the image to run (resolved in the catalog at submit); nil for a process.
    public var imageReference: String?
    /// Whether the task may run as root in its container (its queue allows it); otherwise it runs as its own uid.
    public var allowRoot: Bool
    /// Environment for this launch only, never stored with the workload nor shown by the API (an app's secret).
    public var secretEnv: [String: String] = [:]

    /// Creates a launch.
    public init(
        workloadID: String, tenant: String, spec: WorkloadSpec, taskIndex: Int, node: String, gpus: [Int], inputs: [StagedInput] = [],
        mounts: [ResolvedMount] = [], imageReference: String? = nil, allowRoot: Bool = false
    ) {
        self.workloadID = workloadID
        self.tenant = tenant
        self.spec = spec
        self.taskIndex = taskIndex
        self.node = node
        self.gpus = gpus
        self.inputs = inputs
        self.mounts = mounts
        self.imageReference = imageReference
        self.allowRoot = allowRoot
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

/// A mount resolved to a path on the host.
public struct ResolvedMount: Sendable, Hashable {
    /// The host path (in the data store, or an allowed host path).
    public var hostPath: String
    /// Where the task sees it.
    public var target: String
    /// Whether the task may only read it.
    public var readOnly: Bool
    /// Whether it is a path of the tenant's data store (which the runtime makes readable, or writable, by the
    /// task's uid), rather than a host path an admin allowed (which is mounted as it is).
    public var fromDataStore: Bool

    /// Creates a resolved mount.
    public init(hostPath: String, target: String, readOnly: Bool, fromDataStore: Bool = false) {
        self.hostPath = hostPath
        self.target = target
        self.readOnly = readOnly
        self.fromDataStore = fromDataStore
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

/// A whole workload handed to a backend that schedules for itself (`SchedulingBackend.submit`).
public struct WorkloadSubmission: Sendable, Hashable {
    /// The workload.
    public var workloadID: String
    /// Its tenant.
    public var tenant: String
    /// What it runs: all `spec.tasks` tasks start together (the backend allocates them as one).
    public var spec: WorkloadSpec
    /// The pool its queue maps to; nil for the backend's default.
    public var pool: String?
    /// Files to copy into every task's directory before it starts.
    public var inputs: [StagedInput]
    /// The spec's mounts, resolved to paths on the nodes (the data store is shared with them).
    public var mounts: [ResolvedMount]
    /// The engine's reference of the image to run; nil for processes.
    public var imageReference: String?
    /// Whether tasks may run as root in their containers.
    public var allowRoot: Bool
    /// The image's root file system where the nodes can read it, for backends that run images without a
    /// container engine; nil for processes.
    public var image: PreparedImage?
    /// Which start of the workload this is: 0 for the first, N after its Nth restart (each is a new job).
    public var attempt: Int = 0
    /// Environment for this submission only, never stored with the workload nor shown by the API (an app's secret).
    public var secretEnv: [String: String] = [:]
    /// Whether the command's `{port}` and `{task}` placeholders are left for each task to fill in on its node (an
    /// app's command, where the backend picks the port a task binds).
    public var taskPlaceholders = false

    /// Creates a submission.
    public init(
        workloadID: String, tenant: String, spec: WorkloadSpec, pool: String?, inputs: [StagedInput] = [], mounts: [ResolvedMount] = [],
        imageReference: String? = nil, allowRoot: Bool = false, image: PreparedImage? = nil
    ) {
        self.workloadID = workloadID
        self.tenant = tenant
        self.spec = spec
        self.pool = pool
        self.inputs = inputs
        self.mounts = mounts
        self.imageReference = imageReference
        self.allowRoot = allowRoot
        self.image = image
    }
}

/// Where a backend that schedules for itself started one task.
public struct BackendPlacement: Sendable, Hashable {
    /// Which task.
    public var taskIndex: Int
    /// The node (or, where the backend does not say which task went where, the nodes of the allocation).
    public var node: String
    /// GPU indices, when the backend says.
    public var gpus: [Int]

    /// Creates a placement.
    public init(taskIndex: Int, node: String, gpus: [Int] = []) {
        self.taskIndex = taskIndex
        self.node = node
        self.gpus = gpus
    }
}

/// What a backend reports.
public enum BackendEvent: Sendable {
    /// A task ended.
    case exited(TaskExit)
    /// A submitted workload waits in the backend's own queue, for this reason (only when the reason changes).
    case waiting(workloadID: String, reason: Reason)
    /// A submitted workload's tasks started.
    case started(workloadID: String, placements: [BackendPlacement], at: Date)
    /// The backend stopped answering (a sentence why), or answers again (nil).
    case reachability(problem: String?)
    /// The nodes, with what the backend has allocated on each (backends that schedule for themselves).
    case inventory([NodeView])
}

/// A backend that cannot be reached now; what was asked may succeed later, so the work stays queued.
public struct BackendUnavailable: Error, Sendable {
    /// Why, for people.
    public var message: String

    /// Creates the error.
    public init(_ message: String) { self.message = message }
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

/// An image's root file system, unpacked where a backend's nodes read it (see `ImageEngine.exportFilesystem`).
public struct PreparedImage: Sendable, Hashable {
    /// The engine's id of the image.
    public var id: String
    /// The directory holding the root file system, on storage the nodes share.
    public var rootfs: String
    /// The image's environment, `KEY=value` entries.
    public var env: [String]

    /// Creates one.
    public init(id: String, rootfs: String, env: [String]) {
        self.id = id
        self.rootfs = rootfs
        self.env = env
    }
}

/// Where a workload (or one of its tasks) is in its life.
public enum Phase: String, Sendable, Codable, CaseIterable {
    case pending = "Pending"
    case starting = "Starting"
    case running = "Running"
    case stopping = "Stopping"
    case stopped = "Stopped"
    case succeeded = "Succeeded"
    case failed = "Failed"
    case cancelled = "Cancelled"

    /// Whether nothing more will happen to it (an interactive workload's `Stopped` can be restarted, so it is not terminal).
    public var isTerminal: Bool {
        switch self {
        case .succeeded, .failed, .cancelled: true
        default: false
        }
    }

    /// Whether it holds resources on a node.
    public var holdsResources: Bool {
        switch self {
        case .starting, .running, .stopping: true
        default: false
        }
    }

    /// Whether the scheduler and reconciler still track it.
    public var isActive: Bool { !isTerminal && self != .stopped }

    /// The phases it may move to.
    public var successors: Set<Phase> {
        switch self {
        case .pending: [.starting, .cancelled, .failed]
        // Back to pending only when its runtime's engine went away before any task started (see `Transitions`).
        case .starting: [.pending, .running, .stopping, .succeeded, .failed, .cancelled]
        case .running: [.stopping, .succeeded, .failed, .cancelled]
        case .stopping: [.stopped, .succeeded, .failed, .cancelled]
        case .stopped: [.pending, .cancelled]
        case .succeeded, .failed, .cancelled: []
        }
    }

    /// Whether the move to `next` is allowed.
    public func canMove(to next: Phase) -> Bool { successors.contains(next) }

    /// The phases a task may move to. Tasks are never stopped or restarted on their own: they run once, from
    /// pending (placed: starting; started by a backend that schedules for itself: running) to an end.
    public var taskSuccessors: Set<Phase> {
        switch self {
        case .pending: [.starting, .running, .failed, .cancelled]
        // Back to pending with its workload, when its runtime's engine went away before it started.
        case .starting: [.pending, .running, .succeeded, .failed, .cancelled]
        case .running: [.succeeded, .failed, .cancelled]
        case .stopping, .stopped, .succeeded, .failed, .cancelled: []
        }
    }

    /// Whether a task may move to `next`.
    public func taskCanMove(to next: Phase) -> Bool { taskSuccessors.contains(next) }
}

/// Why a workload is where it is: a typed code and a sentence. Carried whenever the phase does not explain itself.
public struct Reason: Sendable, Hashable, Codable {
    /// Stable reason codes.
    public enum Code: String, Sendable, Codable {
        // Pending
        case held = "Held"
        case queued = "Queued"
        case insufficientResources = "InsufficientResources"
        case reservedForOther = "ResourcesReserved"
        case backendUnavailable = "BackendUnavailable"
        case nodesUnavailable = "NodesUnavailable"
        case quotaExceeded = "QuotaExceeded"
        case waitingForDependency = "WaitingForDependency"
        // Ended
        case completed = "Completed"
        case nonZeroExit = "NonZeroExit"
        case outOfMemory = "OutOfMemory"
        case maxDurationExceeded = "MaxDurationExceeded"
        case signaled = "Signaled"
        case stoppedByUser = "StoppedByUser"
        case taskVanished = "TaskVanished"
        case launchFailed = "LaunchFailed"
        case peerTaskFailed = "PeerTaskFailed"
        case inputStagingFailed = "InputStagingFailed"
        case outputStagingFailed = "OutputStagingFailed"
        case nodeFailure = "NodeFailure"
        case preempted = "Preempted"
        case cancelledInBackend = "CancelledInBackend"
        /// An interactive workload's lease ran out: it was stopped (and may be restarted).
        case leaseExpired = "LeaseExpired"
        /// A condition: an interactive workload's lease ends soon.
        case leaseExpiring = "LeaseExpiring"
        /// A stopped interactive workload was started again.
        case restarted = "Restarted"
        /// An interactive workload showed no activity for its queue's idle timeout: it was stopped.
        case idleTimeout = "IdleTimeout"
        /// A condition: an interactive workload is idle and will be stopped soon unless it is used.
        case idle = "Idle"
    }

    /// The code.
    public var code: Code
    /// A sentence for a person.
    public var message: String

    /// Creates a reason.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }
}

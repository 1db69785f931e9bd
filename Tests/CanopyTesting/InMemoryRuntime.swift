import CanopyCore
import Foundation
import Synchronization

/// A placed runtime that runs nothing: it records launches and stops, lets a test end tasks with an exit code, answers
/// recoveries as told, and can be made unreachable (reported through its events, or found only by a launch).
public final class InMemoryRuntime: PlacedRuntime {
    /// A stop the runtime was asked for.
    public struct Stop: Sendable, Hashable {
        /// The workload.
        public var workloadID: String
        /// Which task.
        public var taskIndex: Int
        /// The handle it was given.
        public var handle: String
        /// The grace it was given.
        public var grace: Double
    }

    private struct State {
        var launches: [TaskLaunch] = []
        var stops: [Stop] = []
        var recoveries: [String: TaskRecovery] = [:]
        var recovered: [(workloadID: String, taskIndex: Int, handle: String?)] = []
        var running: [String: String] = [:]
        var unreachable: String?
        var exitOnStop = true
        var next = 0
        var notices: [(task: String, notice: TaskNotice)] = []
    }

    /// Its kind.
    public let kind: RuntimeKind
    /// Exits and reachability, as the test makes them happen.
    public let events: AsyncStream<BackendEvent>
    /// None.
    public let limitations: [String] = []
    private let continuation: AsyncStream<BackendEvent>.Continuation
    private let state = Mutex(State())

    /// Creates a runtime of `kind`.
    public init(kind: RuntimeKind = .process) {
        self.kind = kind
        (events, continuation) = AsyncStream.makeStream()
    }

    private static func key(_ workloadID: String, _ index: Int) -> String { "\(workloadID)/\(index)" }

    // MARK: PlacedRuntime

    /// Records the launch and returns a fresh handle; throws `BackendUnavailable` while unreachable.
    public func launch(_ task: TaskLaunch) async throws -> LaunchedTask {
        try state.withLock { s in
            if let problem = s.unreachable { throw BackendUnavailable(problem) }
            s.next += 1
            let handle = "\(kind)-\(s.next)"
            s.launches.append(task)
            s.running[Self.key(task.workloadID, task.taskIndex)] = handle
            return LaunchedTask(handle: handle)
        }
    }

    /// Records the stop; the task then ends with 143 (SIGTERM) unless `exitOnStop` was turned off.
    public func stop(workloadID: String, taskIndex: Int, handle: String, grace: Double) async {
        let exits = state.withLock { s in
            s.stops.append(Stop(workloadID: workloadID, taskIndex: taskIndex, handle: handle, grace: grace))
            return s.exitOnStop && s.running[Self.key(workloadID, taskIndex)] != nil
        }
        if exits { end(workloadID, task: taskIndex, exitCode: 143) }
    }

    /// Answers as `answerRecovery` told it (vanished otherwise), and records the question.
    public func recover(workloadID: String, taskIndex: Int, handle: String?) async -> TaskRecovery {
        state.withLock { s in
            s.recovered.append((workloadID, taskIndex, handle))
            let answer = s.recoveries[Self.key(workloadID, taskIndex)] ?? .vanished
            if answer == .running { s.running[Self.key(workloadID, taskIndex)] = handle ?? "recovered" }
            return answer
        }
    }

    /// A path that names the runtime, the workload, the task and the stream.
    public func logPath(workloadID: String, taskIndex: Int, stream: String) -> String {
        "/in-memory/\(kind)/\(workloadID)/task-\(taskIndex)/\(stream).log"
    }

    /// Nothing to delete: this runtime keeps no files.
    public func removeFiles(workloadID: String) async throws {}

    /// Records the notice (see `notices`).
    public func post(_ notice: TaskNotice, workloadID: String, taskIndex: Int) async {
        state.withLock { $0.notices.append((Self.key(workloadID, taskIndex), notice)) }
    }

    /// Nothing to copy.
    public func collectOutputs(workloadID: String, taskIndex: Int, spec: WorkloadSpec, outputs: [StagedOutput]) async throws {}

    /// Nothing runs in the background.
    public func run() async {}

    // MARK: for tests

    /// Every launch so far.
    public var launches: [TaskLaunch] { state.withLock { $0.launches } }

    /// Every stop so far.
    public var stops: [Stop] { state.withLock { $0.stops } }
    /// The notices posted, with `WORKLOAD/TASK` keys, in order.
    public var notices: [(task: String, notice: TaskNotice)] { state.withLock { $0.notices } }

    /// Every recovery asked for so far: workload, task, handle.
    public var recoveries: [(workloadID: String, taskIndex: Int, handle: String?)] { state.withLock { $0.recovered } }

    /// Whether a stop ends the task at once (with 143), as a polite task does.
    public func exitOnStop(_ exits: Bool) { state.withLock { $0.exitOnStop = exits } }

    /// Sets what `recover` answers for a task.
    public func answerRecovery(_ workloadID: String, task: Int, with answer: TaskRecovery) {
        state.withLock { $0.recoveries[Self.key(workloadID, task)] = answer }
    }

    /// Ends a task with an exit code (and a reason), as the runtime would report it.
    public func end(_ workloadID: String, task: Int, exitCode: Int?, reason: Reason? = nil) {
        state.withLock { _ = $0.running.removeValue(forKey: Self.key(workloadID, task)) }
        continuation.yield(.exited(TaskExit(workloadID: workloadID, taskIndex: task, exitCode: exitCode, reason: reason, at: Date())))
    }

    /// Makes launches fail with `BackendUnavailable(problem)` (nil: they work again); `report` also says so through
    /// `events`, as a runtime that watches its engine does.
    public func setUnreachable(_ problem: String?, report: Bool = true) {
        state.withLock { $0.unreachable = problem }
        if report { continuation.yield(.reachability(problem: problem)) }
    }
}

/// A clock a test moves by hand.
public final class ManualClock: Sendable {
    private let current: Mutex<Date>

    /// Starts at `start`.
    public init(_ start: Date = Date(timeIntervalSince1970: 1_800_000_000)) { current = Mutex(start) }

    /// The time now.
    public var now: Date { current.withLock { $0 } }

    /// Moves the time forward.
    public func advance(by seconds: Double) { current.withLock { $0 = $0.addingTimeInterval(seconds) } }

    /// The clock to give the code under test.
    public var clock: Clock { Clock { [self] in self.now } }
}

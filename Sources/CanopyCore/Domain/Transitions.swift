import Foundation

/// The changes of a workload's state, as pure functions from a workload and what happened to the new workload. The
/// controller decides when each applies and does the I/O around it; the rules live here, tested table by table.
///
/// Each function that changes something bumps `version` (so a slow write never overwrites a newer state), and every
/// phase change, of the workload or of a task, goes through the phase machines (`Workload.move`, `TaskStatus.move`).
public enum Transitions {
    /// What deciding a workload's fate after a task ended came to (see `settle`).
    public enum Settlement: Sendable, Hashable {
        /// Nothing to decide yet: tasks still run.
        case unchanged
        /// A task failed while its peers run: the workload now stops, and the peers (all but `failedTask`) must be
        /// stopped with `reason`.
        case stopPeers(Workload, reason: Reason, failedTask: Int)
        /// No task runs any more: the workload ended (or, interactive, stopped).
        case ended(Workload)
    }

    // MARK: starting

    /// The scheduler placed a pending workload: it starts, each task on its node with its GPUs.
    public static func placed(_ w: Workload, placements: [BackendPlacement], at now: Date) -> Workload {
        var w = w
        w.move(to: .starting, reason: nil, at: now)
        for p in placements where w.tasks.indices.contains(p.taskIndex) {
            w.tasks[p.taskIndex].node = p.node
            w.tasks[p.taskIndex].gpus = p.gpus
            w.tasks[p.taskIndex].move(to: .starting)
        }
        w.version += 1
        return w
    }

    /// A runtime started one task: it records the runtime and its handle and runs; once every task runs, so does
    /// the workload.
    public static func launched(_ w: Workload, task i: Int, runtime: RuntimeKind, launched: LaunchedTask, at now: Date) -> Workload {
        var w = w
        guard w.tasks.indices.contains(i) else { return w }
        w.tasks[i].backendID = launched.handle
        w.tasks[i].runtime = runtime
        // An exit handled while the launch was awaited has already ended the task.
        if w.tasks[i].phase == .starting { w.tasks[i].move(to: .running) }
        w.tasks[i].startedAt = now
        if w.phase == .starting, w.tasks.allSatisfy({ $0.phase == .running }), w.move(to: .running, at: now) { startLease(&w, at: now) }
        w.version += 1
        return w
    }

    /// An interactive workload that starts running gets its lease, counted from now (each start gets a fresh one).
    static func startLease(_ w: inout Workload, at now: Date) {
        guard w.spec.kind == .interactive else { return }
        // Each start resets the idle clock (a restarted workload is not idle for its last attempt's quiet).
        w.lastActivityAt = now
        w.lastActivitySource = "start"
        w.idleWarned = nil
        guard w.leaseExpiresAt == nil, let seconds = w.spec.lease?.seconds else { return }
        w.leaseExpiresAt = now.addingTimeInterval(Double(seconds))
        w.leaseWarned = nil
    }

    /// A sign of use: the idle clock starts again from `at` (never moves back), and a pending idle warning is void.
    public static func activity(_ w: Workload, source: String, at: Date) -> Workload {
        guard w.phase == .running, w.spec.kind == .interactive, (w.lastActivityAt ?? .distantPast) < at else { return w }
        var w = w
        w.lastActivityAt = at
        w.lastActivitySource = source
        w.idleWarned = nil
        w.version += 1
        return w
    }

    /// The warning that it will be stopped for idleness was given.
    public static func idleWarningGiven(_ w: Workload) -> Workload {
        var w = w
        w.idleWarned = true
        w.version += 1
        return w
    }

    /// A task could not be started: it failed, and the gang's tasks not started yet never will be.
    public static func launchFailed(_ w: Workload, task i: Int, reason: Reason, at now: Date) -> Workload {
        guard w.tasks.indices.contains(i) else { return w }
        return cancelUnlaunched(vanished(w, task: i, reason: reason, at: now), at: now).workload
    }

    /// The tasks that were placed but never launched (no handle) are cancelled; returns them, to free their share.
    public static func cancelUnlaunched(_ w: Workload, at now: Date) -> (workload: Workload, cancelled: [Int]) {
        var w = w
        let unlaunched = w.tasks.indices.filter { w.tasks[$0].phase == .starting && w.tasks[$0].backendID == nil }
        guard !unlaunched.isEmpty else { return (w, []) }
        for i in unlaunched {
            w.tasks[i].move(to: .cancelled)
            w.tasks[i].finishedAt = now
        }
        w.version += 1
        return (w, unlaunched)
    }

    /// The runtime's engine went away before any task started: the workload waits in its queue again, unplaced,
    /// with `reason`. Unchanged when a task already started (those must be stopped first) or a stop was asked for.
    public static func returnedToPending(_ w: Workload, reason: Reason, at now: Date) -> Workload {
        guard w.phase == .starting, w.stopRequestedAt == nil, w.tasks.allSatisfy({ $0.backendID == nil && !$0.phase.isTerminal }) else { return w }
        var w = w
        w.move(to: .pending, reason: reason, at: now)
        for i in w.tasks.indices {
            w.tasks[i].move(to: .pending)
            w.tasks[i].node = nil
            w.tasks[i].gpus = []
            w.tasks[i].runtime = nil
        }
        w.version += 1
        return w
    }

    /// A backend that schedules for itself accepted the workload as `handle`, shared by all its tasks.
    public static func submitted(_ w: Workload, handle: String, runtime: RuntimeKind) -> Workload {
        var w = w
        for i in w.tasks.indices {
            w.tasks[i].backendID = handle
            w.tasks[i].runtime = runtime
        }
        // The backend's first report (a wait reason, even "started") may have come before this.
        if w.phase == .pending, w.reason == nil || w.reason?.code == .queued || w.reason?.code == .backendUnavailable {
            w.reason = Reason(.queued, "submitted as job \(handle); waiting in the backend's queue")
        }
        w.version += 1
        return w
    }

    /// A backend refused the workload (or its inputs could not be staged): every task failed with `reason`.
    public static func refused(_ w: Workload, reason: Reason, at now: Date) -> Workload {
        var w = w
        for i in w.tasks.indices {
            w.tasks[i].move(to: .failed)
            w.tasks[i].reason = reason
            w.tasks[i].finishedAt = now
        }
        w.version += 1
        return w
    }

    /// A backend that schedules for itself started the workload's tasks, where `placements` say.
    public static func startedByBackend(_ w: Workload, placements: [BackendPlacement], at: Date) -> Workload {
        var w = w
        w.move(to: .starting, reason: nil, at: at)
        for i in w.tasks.indices where w.tasks[i].phase == .pending {
            w.tasks[i].move(to: .running)
            w.tasks[i].startedAt = at
        }
        for p in placements where w.tasks.indices.contains(p.taskIndex) {
            w.tasks[p.taskIndex].node = p.node
            w.tasks[p.taskIndex].gpus = p.gpus
        }
        if w.move(to: .running, reason: nil, at: at) { startLease(&w, at: at) }
        w.version += 1
        return w
    }

    // MARK: ending

    /// A task ended: its exit code and reason give its phase (succeeded; cancelled when a stop was asked for or the
    /// backend cancelled it; failed otherwise). An exit of a task already ended changes nothing.
    public static func taskExited(_ w: Workload, _ exit: TaskExit) -> Workload {
        let i = exit.taskIndex
        guard w.tasks.indices.contains(i), !w.tasks[i].phase.isTerminal else { return w }
        var w = w
        if w.phase == .pending && exit.exitCode != nil {
            // A backend that queues for itself ran it between two looks (or while Canopy was away): it did start.
            w = startedByBackend(w, placements: [], at: exit.at)
        }
        w.tasks[i].exitCode = exit.exitCode
        w.tasks[i].finishedAt = exit.at
        if exit.exitCode == 0 && exit.reason == nil {
            w.tasks[i].move(to: .succeeded)
        } else if exit.reason?.code == .cancelledInBackend {
            w.tasks[i].move(to: .cancelled)
            w.tasks[i].reason = exit.reason
        } else {
            w.tasks[i].move(to: w.stopRequestedAt != nil ? .cancelled : .failed)
            w.tasks[i].reason = exit.reason ?? exitReason(task: i, code: exit.exitCode)
        }
        w.version += 1
        return w
    }

    /// A task that was running before a restart is gone without a trace (and, as a launch that failed, a task
    /// that never started): it failed, for `reason`.
    public static func vanished(_ w: Workload, task i: Int, reason: Reason, at now: Date) -> Workload {
        var w = w
        guard w.tasks.indices.contains(i) else { return w }
        w.tasks[i].move(to: .failed)
        w.tasks[i].finishedAt = now
        w.tasks[i].reason = reason
        w.version += 1
        return w
    }

    /// Tasks never started before a restart: they fail, as the gang cannot start without them.
    public static func notStartedBeforeRestart(_ w: Workload) -> Workload {
        var w = w
        for i in w.tasks.indices where w.tasks[i].phase == .pending {
            w.tasks[i].move(to: .failed)
            w.tasks[i].reason = Reason(.launchFailed, "task \(i) had not been started when Canopy stopped")
        }
        return w
    }

    /// The reason for a task that ended with `code` (nil: unknown).
    public static func exitReason(task: Int, code: Int?) -> Reason {
        guard let code else { return Reason(.taskVanished, "task \(task) ended with no exit status") }
        if code > 128 && code < 160 {
            return Reason(.signaled, "task \(task) was killed by signal \(code - 128)\(code == 137 ? " (SIGKILL)" : code == 143 ? " (SIGTERM)" : "")")
        }
        return Reason(.nonZeroExit, "task \(task) exited with code \(code)")
    }

    /// Decides a workload's fate once a task has ended. While tasks run, a failed task stops its gang (gang
    /// semantics: one task failing ends the workload). When none runs, the workload ends: stopped or cancelled when
    /// `stopReason` says it was stopped (failed for a max duration or a failed peer), failed when a task failed,
    /// cancelled when the backend cancelled a task, succeeded otherwise; its exit code is the failing task's, else
    /// the first non-zero one, else the first one, else 0 (none when stopped before any task ran).
    public static func settle(_ w: Workload, stopReason: Reason?, at now: Date) -> Settlement {
        var w = w
        let stillRunning = w.tasks.contains { $0.phase == .running || $0.phase == .starting }
        let failedTask = w.tasks.first { $0.phase == .failed }
        if stillRunning {
            guard let failedTask, w.stopRequestedAt == nil else { return .unchanged }
            let reason = Reason(.peerTaskFailed, failedTask.reason?.message ?? "task \(failedTask.index) failed")
            w.stopRequestedAt = now
            w.move(to: .stopping, reason: reason, at: now)
            w.version += 1
            return .stopPeers(w, reason: reason, failedTask: failedTask.index)
        }
        let codes = w.tasks.compactMap(\.exitCode)
        let nonZero = codes.first { $0 != 0 }
        w.exitCode = failedTask.flatMap(\.exitCode) ?? nonZero ?? codes.first ?? (failedTask == nil && stopReason == nil ? 0 : nil)
        if let stopped = stopReason {
            if stopped.code == .peerTaskFailed {
                w.move(to: .failed, reason: failedTask?.reason ?? stopped, at: now)
            } else if stopped.code == .maxDurationExceeded {
                w.move(to: .failed, reason: stopped, at: now)
            } else {
                w.move(to: w.spec.kind == .interactive ? .stopped : .cancelled, reason: stopped, at: now)
            }
        } else if let failedTask {
            w.move(to: .failed, reason: failedTask.reason, at: now)
        } else if let cancelled = w.tasks.first(where: { $0.phase == .cancelled && $0.reason != nil }) {
            // Cancelled in the backend, behind Canopy's back (by an operator, for instance).
            w.move(to: .cancelled, reason: cancelled.reason, at: now)
        } else {
            w.move(to: .succeeded, reason: nil, at: now)
        }
        w.version += 1
        return .ended(w)
    }

    // MARK: leases and restarts

    /// The lease now ends at `expiresAt` (nil: unlimited); the warning will be given again before the new end.
    public static func leaseSet(_ w: Workload, expiresAt: Date?, lease: Lease) -> Workload {
        var w = w
        w.spec.lease = lease
        w.leaseExpiresAt = expiresAt
        w.leaseWarned = nil
        w.version += 1
        return w
    }

    /// The warning that the lease ends soon was given.
    public static func leaseWarningGiven(_ w: Workload) -> Workload {
        var w = w
        w.leaseWarned = true
        w.version += 1
        return w
    }

    /// A stopped interactive workload starts again: it waits in its queue as a new attempt, every task fresh
    /// (unplaced, without handle, exit code or times), its files where they were. Unchanged unless stopped.
    public static func restarted(_ w: Workload, at now: Date) -> Workload {
        guard w.phase == .stopped else { return w }
        var w = w
        w.move(to: .pending, reason: Reason(.restarted, "restarted: waiting for a scheduling pass"), at: now)
        // A new attempt: the tasks of the last one ended (terminal phases never move again), so each is a new
        // task status, not a moved one.
        w.tasks = (0..<w.spec.tasks).map(TaskStatus.init(index:))
        w.exitCode = nil
        w.startedAt = nil
        w.finishedAt = nil
        w.stopRequestedAt = nil
        w.leaseExpiresAt = nil
        w.leaseWarned = nil
        w.restarts = (w.restarts ?? 0) + 1
        w.version += 1
        return w
    }

    // MARK: stopping

    /// A stop was asked for: a pending workload is cancelled at once (with its tasks); a starting or running one
    /// records the request and moves to stopping (its tasks are then signalled); any other is left as it is.
    public static func stopRequested(_ w: Workload, reason: Reason, at now: Date) -> Workload {
        var w = w
        switch w.phase {
        case .pending:
            w.move(to: .cancelled, reason: reason, at: now)
            for i in w.tasks.indices { w.tasks[i].move(to: .cancelled) }
        case .starting, .running:
            w.stopRequestedAt = now
            w.move(to: .stopping, reason: reason, at: now)
        default:
            return w
        }
        w.version += 1
        return w
    }
}

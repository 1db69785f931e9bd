import Foundation
import Testing

@testable import CanopyCore

@Suite("transitions: a workload and what happened, to the new workload")
struct TransitionsTests {
    static let t0 = Date(timeIntervalSince1970: 1_000_000)

    /// A workload of `tasks` tasks, in `phase`, each task in `taskPhase` (with a handle once started).
    static func workload(tasks: Int = 1, kind: WorkloadKind = .batch, phase: Phase = .running, taskPhase: Phase = .running, stopRequested: Bool = false)
        -> Workload
    {
        var w = Workload(id: "w", tenant: "t", owner: "u", spec: WorkloadSpec(kind: kind, command: ["true"], tasks: tasks), createdAt: t0)
        w.phase = phase
        for i in w.tasks.indices {
            w.tasks[i].phase = taskPhase
            if taskPhase != .pending { w.tasks[i].backendID = "h\(i)" }
        }
        if stopRequested { w.stopRequestedAt = t0 }
        return w
    }

    // MARK: phase machines

    @Test(
        "task phase moves follow the task phase machine",
        arguments: [
            (Phase.pending, Phase.starting, true), (.pending, .running, true), (.pending, .cancelled, true), (.pending, .succeeded, false),
            (.starting, .running, true), (.starting, .pending, true), (.starting, .failed, true), (.running, .succeeded, true),
            (.running, .pending, false), (.running, .stopping, false), (.succeeded, .failed, false), (.failed, .running, false),
            (.cancelled, .succeeded, false),
        ])
    func taskMoves(from: Phase, to: Phase, allowed: Bool) {
        var t = TaskStatus(index: 0)
        t.phase = from
        #expect(t.move(to: to) == allowed)
        #expect(t.phase == (allowed ? to : from))
    }

    @Test("a starting workload may return to pending; a running one may not")
    func startingToPending() {
        #expect(Phase.starting.canMove(to: .pending))
        #expect(!Phase.running.canMove(to: .pending))
        #expect(!Phase.stopping.canMove(to: .pending))
    }

    // MARK: task exits

    @Test(
        "a task's exit gives its phase and reason",
        arguments: [
            // exit code, reason code from the runtime, stop requested -> task phase, task reason code
            (0 as Int?, nil as Reason.Code?, false, Phase.succeeded, nil as Reason.Code?),
            (3, nil, false, .failed, .nonZeroExit),
            (137, nil, false, .failed, .signaled),
            (143, nil, true, .cancelled, .signaled),
            (nil, nil, false, .failed, .taskVanished),
            (137, .outOfMemory, false, .failed, .outOfMemory),
            (0, .outputStagingFailed, false, .failed, .outputStagingFailed),
            (nil, .cancelledInBackend, false, .cancelled, .cancelledInBackend),
        ])
    func exits(code: Int?, reason: Reason.Code?, stopRequested: Bool, phase: Phase, taskReason: Reason.Code?) {
        let w = Self.workload(phase: stopRequested ? .stopping : .running, stopRequested: stopRequested)
        let exit = TaskExit(workloadID: "w", taskIndex: 0, exitCode: code, reason: reason.map { Reason($0, "why") }, at: Self.t0.addingTimeInterval(5))
        let after = Transitions.taskExited(w, exit)
        #expect(after.tasks[0].phase == phase)
        #expect(after.tasks[0].reason?.code == taskReason)
        #expect(after.tasks[0].exitCode == code)
        #expect(after.tasks[0].finishedAt == Self.t0.addingTimeInterval(5))
        #expect(after.version == w.version + 1)
    }

    @Test("an exit of a task that already ended changes nothing")
    func exitTwice() {
        let w = Self.workload(taskPhase: .succeeded)
        #expect(Transitions.taskExited(w, TaskExit(workloadID: "w", taskIndex: 0, exitCode: 1, at: Self.t0)) == w)
    }

    @Test("an exit of a pending workload with a code means its backend started it")
    func exitWhilePending() {
        let w = Self.workload(phase: .pending, taskPhase: .pending)
        let after = Transitions.taskExited(w, TaskExit(workloadID: "w", taskIndex: 0, exitCode: 0, at: Self.t0))
        #expect(after.phase == .running)
        #expect(after.tasks[0].phase == .succeeded)
    }

    // MARK: settling

    @Test(
        "when no task runs, the workload ends with a phase and an exit code",
        arguments: [
            // task phases and codes, stop reason, kind -> workload phase, exit code, reason code
            ([(Phase.succeeded, 0 as Int?), (.succeeded, 0)], nil as Reason.Code?, WorkloadKind.batch, Phase.succeeded, 0 as Int?, nil as Reason.Code?),
            ([(.succeeded, 0), (.failed, 2)], nil, .batch, .failed, 2, .nonZeroExit),
            ([(.cancelled, 143)], .stoppedByUser, .batch, .cancelled, 143, .stoppedByUser),
            ([(.cancelled, 143)], .stoppedByUser, .interactive, .stopped, 143, .stoppedByUser),
            ([(.cancelled, 143)], .maxDurationExceeded, .batch, .failed, 143, .maxDurationExceeded),
            ([(.failed, 1), (.cancelled, 143)], .peerTaskFailed, .batch, .failed, 1, .nonZeroExit),
            ([(.cancelled, nil)], .stoppedByUser, .batch, .cancelled, nil, .stoppedByUser),
            ([(.succeeded, 0), (.succeeded, 4)], nil, .batch, .succeeded, 4, nil),
        ])
    func settles(tasks: [(Phase, Int?)], stop: Reason.Code?, kind: WorkloadKind, phase: Phase, exitCode: Int?, reason: Reason.Code?) {
        var w = Self.workload(tasks: tasks.count, kind: kind, phase: stop == nil ? .running : .stopping, stopRequested: stop != nil)
        for (i, (p, code)) in tasks.enumerated() {
            w.tasks[i].phase = p
            w.tasks[i].exitCode = code
            if p == .failed { w.tasks[i].reason = Transitions.exitReason(task: i, code: code) }
        }
        guard case .ended(let after) = Transitions.settle(w, stopReason: stop.map { Reason($0, "stop") }, at: Self.t0) else {
            Issue.record("the workload did not end")
            return
        }
        #expect(after.phase == phase)
        #expect(after.exitCode == exitCode)
        #expect(after.reason?.code == reason)
        #expect(after.finishedAt == Self.t0)
    }

    @Test("a task cancelled in the backend, unasked, cancels the workload with its reason")
    func cancelledInBackend() {
        var w = Self.workload()
        w.tasks[0].phase = .cancelled
        w.tasks[0].reason = Reason(.cancelledInBackend, "scancel by an operator")
        guard case .ended(let after) = Transitions.settle(w, stopReason: nil, at: Self.t0) else {
            Issue.record("the workload did not end")
            return
        }
        #expect(after.phase == .cancelled)
        #expect(after.reason?.code == .cancelledInBackend)
    }

    @Test("a failed task stops its running peers, once")
    func gangFailure() {
        var w = Self.workload(tasks: 3)
        w.tasks[1].phase = .failed
        w.tasks[1].reason = Reason(.nonZeroExit, "task 1 exited with code 1")
        guard case .stopPeers(let after, let reason, let failed) = Transitions.settle(w, stopReason: nil, at: Self.t0) else {
            Issue.record("peers were not stopped")
            return
        }
        #expect(failed == 1)
        #expect(reason.code == .peerTaskFailed)
        #expect(reason.message == "task 1 exited with code 1")
        #expect(after.phase == .stopping)
        #expect(after.stopRequestedAt == Self.t0)
        // Asked again while the peers stop: nothing more to do.
        #expect(Transitions.settle(after, stopReason: reason, at: Self.t0) == .unchanged)
    }

    @Test("while tasks run and none failed, nothing is decided")
    func stillRunning() {
        var w = Self.workload(tasks: 2)
        w.tasks[0].phase = .succeeded
        #expect(Transitions.settle(w, stopReason: nil, at: Self.t0) == .unchanged)
    }

    // MARK: stops

    @Test(
        "a stop cancels a pending workload, stops a running one, and leaves an ended one",
        arguments: [
            (Phase.pending, Phase.cancelled, false), (.starting, .stopping, true), (.running, .stopping, true), (.stopping, .stopping, false),
            (.succeeded, .succeeded, false), (.stopped, .stopped, false),
        ])
    func stops(from: Phase, to: Phase, records: Bool) {
        let w = Self.workload(phase: from, taskPhase: from == .pending ? .pending : .running)
        let after = Transitions.stopRequested(w, reason: Reason(.stoppedByUser, "stopped"), at: Self.t0)
        #expect(after.phase == to)
        #expect((after.stopRequestedAt != nil) == records)
        if from == .pending { #expect(after.tasks.allSatisfy { $0.phase == .cancelled }) }
        if from == to { #expect(after == w) }
    }

    // MARK: starting

    @Test("placed, then launched task by task: the workload runs once every task runs")
    func placeAndLaunch() {
        let w = Self.workload(tasks: 2, phase: .pending, taskPhase: .pending)
        let placed = Transitions.placed(w, placements: [.init(taskIndex: 0, node: "n", gpus: [1]), .init(taskIndex: 1, node: "n", gpus: [])], at: Self.t0)
        #expect(placed.phase == .starting)
        #expect(placed.tasks.map(\.phase) == [.starting, .starting])
        #expect(placed.tasks[0].gpus == [1])
        let first = Transitions.launched(placed, task: 0, runtime: .container, launched: LaunchedTask(handle: "c1"), at: Self.t0)
        #expect(first.phase == .starting)
        #expect(first.tasks[0].phase == .running)
        #expect(first.tasks[0].runtime == .container)
        #expect(first.tasks[0].backendID == "c1")
        let both = Transitions.launched(first, task: 1, runtime: .container, launched: LaunchedTask(handle: "c2"), at: Self.t0.addingTimeInterval(1))
        #expect(both.phase == .running)
        #expect(both.startedAt == Self.t0.addingTimeInterval(1))
    }

    @Test("a failed launch fails its task and cancels the tasks never launched")
    func launchFailure() {
        let w = Transitions.placed(
            Self.workload(tasks: 3, phase: .pending, taskPhase: .pending), placements: (0..<3).map { .init(taskIndex: $0, node: "n") }, at: Self.t0)
        let one = Transitions.launched(w, task: 0, runtime: .process, launched: LaunchedTask(handle: "1"), at: Self.t0)
        let after = Transitions.launchFailed(one, task: 1, reason: Reason(.launchFailed, "no"), at: Self.t0)
        #expect(after.tasks.map(\.phase) == [.running, .failed, .cancelled])
        #expect(after.tasks[1].reason?.code == .launchFailed)
    }

    @Test("an engine gone before any task started sends the workload back to its queue, unplaced")
    func backToPending() {
        let w = Transitions.placed(
            Self.workload(tasks: 2, phase: .pending, taskPhase: .pending), placements: (0..<2).map { .init(taskIndex: $0, node: "n", gpus: [$0]) }, at: Self.t0)
        let reason = Reason(.backendUnavailable, "docker is gone")
        let back = Transitions.returnedToPending(w, reason: reason, at: Self.t0)
        #expect(back.phase == .pending)
        #expect(back.reason == reason)
        #expect(back.tasks.allSatisfy { $0.phase == .pending && $0.node == nil && $0.gpus.isEmpty })
        // Not once a task started: that one must be stopped, not forgotten.
        let started = Transitions.launched(w, task: 0, runtime: .container, launched: LaunchedTask(handle: "c"), at: Self.t0)
        #expect(Transitions.returnedToPending(started, reason: reason, at: Self.t0) == started)
    }

    @Test("a backend that schedules for itself: submitted, then started where it says")
    func backendStarts() {
        let w = Self.workload(tasks: 2, phase: .pending, taskPhase: .pending)
        let submitted = Transitions.submitted(w, handle: "42", runtime: .slurm)
        #expect(submitted.tasks.allSatisfy { $0.backendID == "42" && $0.runtime == .slurm })
        #expect(submitted.reason?.code == .queued)
        let started = Transitions.startedByBackend(submitted, placements: [.init(taskIndex: 1, node: "c2")], at: Self.t0)
        #expect(started.phase == .running)
        #expect(started.tasks.map(\.phase) == [.running, .running])
        #expect(started.tasks[1].node == "c2")
        #expect(started.startedAt == Self.t0)
    }
}

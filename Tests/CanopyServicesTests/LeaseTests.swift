import CanopyCore
import CanopySQLite
import CanopyTesting
import Foundation
import Testing

@testable import CanopyServices

@Suite("interactive workloads: leases, warnings, stop to Stopped, restart")
struct LeaseTests {
    @Test("the enforcer: a lease past its end is due (LeaseExpired); a warning comes once, within 15 minutes or half the lease")
    func enforcerRules() {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        var w = Workload(id: "i", tenant: "t", owner: "u", spec: WorkloadSpec(kind: .interactive, command: ["sh"], lease: .seconds(3600)), createdAt: now)
        w.phase = .running
        w.leaseExpiresAt = now.addingTimeInterval(1000)
        #expect(Enforcer().due([w], now: now).isEmpty)
        #expect(Enforcer().warnings([w], now: now).isEmpty, "1000 s left: not within 15 minutes yet")
        #expect(Enforcer().warnings([w], now: now.addingTimeInterval(101)).map(\.id) == ["i"])
        #expect(Enforcer().warnings([w], now: now.addingTimeInterval(99)).isEmpty)
        w.leaseWarned = true
        #expect(Enforcer().warnings([w], now: now.addingTimeInterval(500)).isEmpty, "once")
        let due = Enforcer().due([w], now: now.addingTimeInterval(1000))
        #expect(due.map(\.reason.code) == [.leaseExpired])
        // A short lease is warned at its half.
        var short = w
        short.spec.lease = .seconds(600)
        short.leaseWarned = nil
        #expect(Enforcer.warningLead(lease: 600) == 300)
        #expect(Enforcer().warnings([short], now: now.addingTimeInterval(700)).count == 1)
    }

    @Test("transitions: the lease starts when the last task runs; a restart is a fresh attempt and a fresh lease")
    func transitions() {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        var w = Workload(
            id: "i", tenant: "t", owner: "u", spec: WorkloadSpec(kind: .interactive, command: ["sh"], tasks: 2, lease: .seconds(7200)), createdAt: now)
        w = Transitions.placed(w, placements: [BackendPlacement(taskIndex: 0, node: "n"), BackendPlacement(taskIndex: 1, node: "n")], at: now)
        w = Transitions.launched(w, task: 0, runtime: .process, launched: LaunchedTask(handle: "1"), at: now)
        #expect(w.leaseExpiresAt == nil, "not before every task runs")
        w = Transitions.launched(w, task: 1, runtime: .process, launched: LaunchedTask(handle: "2"), at: now.addingTimeInterval(5))
        #expect(w.phase == .running && w.leaseExpiresAt == now.addingTimeInterval(7205))
        w = Transitions.stopRequested(w, reason: Reason(.leaseExpired, "ended"), at: now)
        for i in 0..<2 { w = Transitions.taskExited(w, TaskExit(workloadID: "i", taskIndex: i, exitCode: 143, at: now)) }
        guard case .ended(let stopped) = Transitions.settle(w, stopReason: Reason(.leaseExpired, "ended"), at: now) else {
            Issue.record("not ended")
            return
        }
        #expect(stopped.phase == .stopped && stopped.reason?.code == .leaseExpired)
        let again = Transitions.restarted(stopped, at: now.addingTimeInterval(60))
        #expect(again.phase == .pending && again.reason?.code == .restarted && again.restarts == 1)
        #expect(again.tasks.allSatisfy { $0.phase == .pending && $0.backendID == nil && $0.exitCode == nil && $0.node == nil })
        #expect(again.leaseExpiresAt == nil && again.exitCode == nil && again.finishedAt == nil && again.stopRequestedAt == nil)
        #expect(Transitions.restarted(again, at: now) == again, "only a stopped workload restarts")
        // A batch workload never gets a lease.
        var batch = Workload(id: "b", tenant: "t", owner: "u", spec: WorkloadSpec(command: ["x"]), createdAt: now)
        batch = Transitions.placed(batch, placements: [BackendPlacement(taskIndex: 0, node: "n")], at: now)
        batch = Transitions.launched(batch, task: 0, runtime: .process, launched: LaunchedTask(handle: "1"), at: now)
        #expect(batch.leaseExpiresAt == nil)
    }

    @Test("a lease runs out on a manual clock: warned in the task's files, stopped with LeaseExpired, restarted with a fresh lease")
    func expiresAndRestarts() async throws {
        let clock = ManualClock()
        let h = try await Harness.start(clock: clock.clock, withContainer: false)
        defer { h.shutdown() }
        let id = try await h.submit(
            WorkloadSpec(kind: .interactive, command: ["jupyter"], resources: Resources(cpuMillis: 1000, memoryMiB: 512), lease: .seconds(3600)))
        #expect(try await h.reaches(id, .running))
        let started = try #require(try await h.workload(id))
        #expect(started.leaseExpiresAt == clock.now.addingTimeInterval(3600))
        // The task learns its lease when it starts: `.canopy/lease`.
        #expect(try await eventually { h.process.notices.contains { $0.notice.name == "lease" && $0.notice.logLine == nil } })
        // Fourteen minutes before the end: warned once, in the file and the log, and as a condition.
        clock.advance(by: 3600 - 14 * 60)
        #expect(try await eventually { h.process.notices.contains { $0.notice.logLine?.contains("ends at") == true } })
        #expect(try await eventually { try await h.workload(id)?.conditions?.contains { $0.code == .leaseExpiring } == true })
        // The extension moves the end without a restart.
        let extended = try await h.controller.setLease(id, lease: .seconds(3600), expiresAt: clock.now.addingTimeInterval(7200))
        #expect(extended.phase == .running && extended.leaseWarned == nil)
        clock.advance(by: 20 * 60)
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await h.workload(id)?.phase == .running, "the old end has passed, the new one not")
        // The new end: stopped (the runtime's task exits on stop), Stopped with LeaseExpired.
        clock.advance(by: 7200)
        #expect(try await h.reaches(id, .stopped))
        let stopped = try #require(try await h.workload(id))
        #expect(stopped.reason?.code == .leaseExpired)
        #expect(h.process.stops.count == 1)
        // Restart: pending, then running again, a new launch, a fresh lease from now.
        let restarted = try await h.controller.restart(id)
        #expect(restarted.phase == .pending || restarted.phase == .starting || restarted.phase == .running)
        #expect(try await h.reaches(id, .running))
        #expect(h.process.launches.count == 2)
        let again = try #require(try await h.workload(id))
        #expect(again.leaseExpiresAt == clock.now.addingTimeInterval(3600) && again.restarts == 1)
        // Restarting what is not stopped is a conflict.
        await #expect(throws: CanopyError.self) { _ = try await h.controller.restart(id) }
    }
}

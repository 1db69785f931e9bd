import CanopyCore
import Foundation
import Testing

@testable import CanopyServices

@Suite("enforcer: time-based rules")
struct EnforcerTests {
    static let t0 = Date(timeIntervalSince1970: 1_000_000)

    static func workload(_ id: String, phase: Phase, maxDuration: Int?, startedAt: Date?) -> Workload {
        var w = Workload(id: id, tenant: "t", owner: "u", spec: WorkloadSpec(command: ["x"], maxDurationSeconds: maxDuration), createdAt: t0)
        w.phase = phase
        w.startedAt = startedAt
        return w
    }

    @Test(
        "a workload is due once it ran its max duration, and only while it runs",
        arguments: [
            (Phase.running, 60 as Int?, 60.0, true), (.running, 60, 59.9, false), (.starting, 60, 61, true), (.running, nil, 1e6, false),
            (.stopping, 60, 120, false), (.pending, 60, 120, false),
        ])
    func due(phase: Phase, maxDuration: Int?, elapsed: Double, due: Bool) {
        let w = Self.workload("w", phase: phase, maxDuration: maxDuration, startedAt: Self.t0)
        let found = Enforcer().due([w], now: Self.t0.addingTimeInterval(elapsed))
        #expect(found.map(\.workloadID) == (due ? ["w"] : []))
        if due { #expect(found.first?.reason == Reason(.maxDurationExceeded, "ran longer than its max duration of 1m")) }
    }

    @Test("without a workload start time, its first task's start counts")
    func taskStart() {
        var w = Self.workload("w", phase: .starting, maxDuration: 10, startedAt: nil)
        w.tasks[0].startedAt = Self.t0
        #expect(Enforcer().due([w], now: Self.t0.addingTimeInterval(10)).count == 1)
        #expect(Enforcer().due([w], now: Self.t0.addingTimeInterval(9)).isEmpty)
    }
}

import CanopyCore
import Foundation
import Testing

@testable import CanopyServices

@Suite("idle stop: the rule, its warning, and what resets the clock")
struct IdleTests {
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    static func running(kind: WorkloadKind = .interactive) -> Workload {
        var w = Workload(
            id: "i", tenant: "t", owner: "u", spec: WorkloadSpec(kind: kind, command: ["sh"], lease: kind == .interactive ? .unlimited : nil), createdAt: t0)
        w = Transitions.placed(w, placements: [BackendPlacement(taskIndex: 0, node: "n")], at: t0)
        return Transitions.launched(w, task: 0, runtime: .process, launched: LaunchedTask(handle: "1"), at: t0)
    }

    @Test(
        "idle for the timeout from the start or the last activity is due (IdleTimeout); activity and restarts reset the clock; batch workloads are never idle-stopped"
    )
    func rule() {
        let hour: (Workload) -> Int? = { _ in 3600 }
        var w = Self.running()
        #expect(w.lastActivityAt == Self.t0 && w.lastActivitySource == "start", "a start is activity")
        #expect(Enforcer().due([w], now: Self.t0.addingTimeInterval(3599), idleTimeout: hour).isEmpty)
        let due = Enforcer().due([w], now: Self.t0.addingTimeInterval(3600), idleTimeout: hour)
        #expect(due.map(\.reason.code) == [.idleTimeout])
        #expect(due.first?.reason.message.contains("no activity for 1h (last: start") == true, "\(due)")
        #expect(Enforcer().due([w], now: Self.t0.addingTimeInterval(99_999)).isEmpty, "no timeout, no idle stop")

        w = Transitions.activity(w, source: "proxy", at: Self.t0.addingTimeInterval(3000))
        #expect(w.lastActivitySource == "proxy")
        #expect(Enforcer().due([w], now: Self.t0.addingTimeInterval(3600), idleTimeout: hour).isEmpty)
        #expect(Enforcer().due([w], now: Self.t0.addingTimeInterval(6600), idleTimeout: hour).map(\.reason.code) == [.idleTimeout])
        #expect(Transitions.activity(w, source: "cpu", at: Self.t0.addingTimeInterval(10)) == w, "the clock never moves back")

        // Warned once within 15 minutes (or half the timeout) of the stop; activity makes the warning void.
        #expect(Enforcer().idleWarnings([w], now: Self.t0.addingTimeInterval(5600), idleTimeout: hour).isEmpty)
        #expect(Enforcer().idleWarnings([w], now: Self.t0.addingTimeInterval(5800), idleTimeout: hour).map(\.id) == ["i"])
        w = Transitions.idleWarningGiven(w)
        #expect(Enforcer().idleWarnings([w], now: Self.t0.addingTimeInterval(5900), idleTimeout: hour).isEmpty, "once")
        w = Transitions.activity(w, source: "gpu", at: Self.t0.addingTimeInterval(5950))
        #expect(w.idleWarned == nil)
        #expect(Enforcer().idleWarnings([w], now: Self.t0.addingTimeInterval(5950 + 3000), idleTimeout: hour).map(\.id) == ["i"])

        // A batch workload is not idle-stopped, however quiet.
        let batch = Self.running(kind: .batch)
        #expect(Enforcer().due([batch], now: Self.t0.addingTimeInterval(99_999), idleTimeout: hour).isEmpty)
        #expect(Transitions.activity(batch, source: "cpu", at: Self.t0.addingTimeInterval(1)) == batch)
    }

    @Test("a restart starts the idle clock again (a stale last activity does not stop it at once)")
    func restartResets() {
        var w = Self.running()
        w = Transitions.stopRequested(w, reason: Reason(.idleTimeout, "idle"), at: Self.t0.addingTimeInterval(7200))
        w = Transitions.taskExited(w, TaskExit(workloadID: "i", taskIndex: 0, exitCode: 143, at: Self.t0.addingTimeInterval(7201)))
        guard case .ended(let stopped) = Transitions.settle(w, stopReason: Reason(.idleTimeout, "idle"), at: Self.t0.addingTimeInterval(7201)) else {
            Issue.record("not ended")
            return
        }
        var again = Transitions.restarted(stopped, at: Self.t0.addingTimeInterval(9000))
        again = Transitions.placed(again, placements: [BackendPlacement(taskIndex: 0, node: "n")], at: Self.t0.addingTimeInterval(9000))
        again = Transitions.launched(again, task: 0, runtime: .process, launched: LaunchedTask(handle: "2"), at: Self.t0.addingTimeInterval(9001))
        #expect(again.lastActivityAt == Self.t0.addingTimeInterval(9001) && again.idleWarned == nil)
        #expect(Enforcer().due([again], now: Self.t0.addingTimeInterval(9002), idleTimeout: { _ in 3600 }).isEmpty)
    }

    @Test("the sampling interval is a quarter of the timeout, from 2 to 30 seconds")
    func sampling() {
        #expect(WorkloadController.sampleInterval(timeout: 10) == 2.5)
        #expect(WorkloadController.sampleInterval(timeout: 4) == 2)
        #expect(WorkloadController.sampleInterval(timeout: 3600) == 30)
    }

    @Test("through the proxy, a page load, a change or a script's request is activity; a browser's background polls and WebSocket handshakes are not")
    func proxyActivity() {
        #expect(EndpointService.isActivity(method: "GET", fetchMode: "navigate", upgrade: false))
        #expect(EndpointService.isActivity(method: "GET", fetchMode: nil, upgrade: false), "curl, scripts")
        #expect(EndpointService.isActivity(method: "PUT", fetchMode: "cors", upgrade: false), "a notebook saved")
        #expect(EndpointService.isActivity(method: "POST", fetchMode: "same-origin", upgrade: false))
        #expect(!EndpointService.isActivity(method: "GET", fetchMode: "cors", upgrade: false), "JupyterLab polling /api/kernels")
        #expect(!EndpointService.isActivity(method: "GET", fetchMode: "same-origin", upgrade: false))
        #expect(!EndpointService.isActivity(method: "GET", fetchMode: "websocket", upgrade: true), "a tab reconnecting its kernel")
    }
}

@Suite("idle stop: what an instance says when asked")
struct ActivitySignalTests {
    /// An exec runner whose commands end at once with a fixed code.
    struct Ending: TaskExecRunner {
        final class Session: ExecSession {
            let code: Int
            init(code: Int) { self.code = code }
            var output: AsyncStream<ExecOutput> { AsyncStream { $0.yield(.stdout(Array("ok\n".utf8))); $0.finish() } }
            func write(_ bytes: [UInt8]) async {}
            func closeInput() async {}
            func resize(rows: Int, columns: Int) async {}
            func exitCode() async -> Int? { code }
            func terminate() async {}
        }
        let code: Int
        func exec(workloadID: String, taskIndex: Int, handle: String, request: ExecRequest) async throws -> any ExecSession { Session(code: code) }
    }

    @Test("Jupyter's kernels API: any kernel busy is use; idle ones, errors and other answers are not")
    func kernels() {
        func answer(_ status: String, _ body: String) -> [UInt8] { Array("HTTP/1.1 \(status)\r\nContent-Type: application/json\r\n\r\n\(body)".utf8) }
        #expect(ActivitySignals.kernelsBusy(answer("200 OK", #"[{"id": "a", "execution_state": "idle"}, {"id": "b", "execution_state": "busy"}]"#)))
        #expect(!ActivitySignals.kernelsBusy(answer("200 OK", #"[{"id": "a", "execution_state": "idle"}]"#)))
        #expect(!ActivitySignals.kernelsBusy(answer("200 OK", "[]")))
        #expect(!ActivitySignals.kernelsBusy(answer("403 Forbidden", #"[{"execution_state": "busy"}]"#)))
        #expect(!ActivitySignals.kernelsBusy(answer("200 OK", #"{"execution_state": "busy"}"#)))
        #expect(!ActivitySignals.kernelsBusy(Array("garbage".utf8)))
        #expect(!ActivitySignals.kernelsBusy([]))
    }

    @Test("the probe command counts only when it exits 0")
    func probe() async {
        let w = IdleTests.running()
        #expect(await ActivitySignals.probeSucceeds(w, command: ["true"], handle: "1", runner: Ending(code: 0)))
        #expect(!(await ActivitySignals.probeSucceeds(w, command: ["false"], handle: "1", runner: Ending(code: 1))))
    }
}

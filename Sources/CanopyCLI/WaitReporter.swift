import CanopyCore
import Foundation

/// Tells, on standard error, why a foreground `canopy run` waits: once when its workload is pending with a
/// reason, again whenever the reason changes, and "started" when it leaves the queue (as `srun` says "queued and
/// waiting for resources", then "has been allocated resources"). A workload that starts at once prints nothing.
struct WaitReporter {
    let client: CanopyClient
    /// How often the workload is looked at while it is pending.
    var interval: Duration = .milliseconds(500)

    /// What has been said so far.
    struct State: Equatable, Sendable {
        var reason: Reason?
        var waited = false
        var started = false
    }

    /// The line to print on seeing `w` (if any), and whether there is nothing more to report.
    static func step(_ w: Workload, _ state: inout State) -> (line: String?, done: Bool) {
        if w.phase == .pending {
            guard let reason = w.reason, reason != state.reason else { return (nil, false) }
            state.reason = reason
            state.waited = true
            return ("canopy: workload \(w.id) is pending: \(reason.message) [\(reason.code.rawValue)]", false)
        }
        let ran = w.phase.holdsResources || w.startedAt != nil || w.tasks.contains { $0.startedAt != nil }
        guard state.waited, !state.started, ran else { return (nil, true) }
        state.started = true
        return ("canopy: workload \(w.id) started", true)
    }

    /// Reports on `submitted` until it leaves Pending, or until cancelled; returns what it has said.
    func report(from submitted: Workload) async -> State {
        var state = State()
        var w = submitted
        while true {
            let (line, done) = Self.step(w, &state)
            if let line { FileHandle.standardError.write(Data((line + "\n").utf8)) }
            if done { return state }
            do { try await Task.sleep(for: interval) } catch { return state }
            if let next = try? await client.call(.GET, "/workloads/\(w.id)", as: Workload.self) { w = next }
        }
    }
}

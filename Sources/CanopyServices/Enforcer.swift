import CanopyCore
import Foundation

/// Time-based rules over running workloads, as a pure decision: which must stop now, and why. Today the rule is
/// the max duration; leases of interactive workloads and idle stops belong here too.
public struct Enforcer: Sendable {
    /// A workload that must stop, and the reason it stops with.
    public struct Due: Sendable, Hashable {
        /// The workload.
        public var workloadID: String
        /// Why it stops.
        public var reason: Reason
    }

    /// Creates the enforcer.
    public init() {}

    /// The workloads among `workloads` that must stop at `now`: starting or running (a stop not yet asked for)
    /// since longer than their max duration.
    public func due(_ workloads: some Sequence<Workload>, now: Date) -> [Due] {
        workloads.compactMap { w in
            guard w.phase == .running || w.phase == .starting, let max = w.spec.maxDurationSeconds,
                let started = w.startedAt ?? w.tasks.compactMap(\.startedAt).min(), now.timeIntervalSince(started) >= Double(max)
            else { return nil }
            return Due(workloadID: w.id, reason: Reason(.maxDurationExceeded, "ran longer than its max duration of \(Quantity.formatDuration(max))"))
        }
    }
}

import CanopyCore
import Foundation

/// Time-based rules over running workloads, as a pure decision: which must stop now, and why. Today the rule is
/// the max duration and the
/// lease of interactive workloads; idle stops belong here too.
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
            guard w.phase == .running || w.phase == .starting else { return nil }
            if let max = w.spec.maxDurationSeconds, let started = w.startedAt ?? w.tasks.compactMap(\.startedAt).min(),
                now.timeIntervalSince(started) >= Double(max)
            {
                return Due(workloadID: w.id, reason: Reason(.maxDurationExceeded, "ran longer than its max duration of \(Quantity.formatDuration(max))"))
            }
            if let end = w.leaseExpiresAt, now >= end {
                return Due(workloadID: w.id, reason: Reason(.leaseExpired, "its lease ended at \(Self.timestamp(end)); restart it with canopy restart \(w.id)"))
            }
            return nil
        }
    }

    /// How long before a lease ends its warning comes: 15 minutes, or half the lease when that is shorter.
    public static func warningLead(lease seconds: Int?) -> TimeInterval {
        min(15 * 60, Double(seconds ?? Int.max) / 2)
    }

    /// The running workloads whose lease ends within its warning lead and that were not warned yet.
    public func warnings(_ workloads: some Sequence<Workload>, now: Date) -> [Workload] {
        workloads.filter { w in
            guard w.phase == .running, w.leaseWarned != true, let end = w.leaseExpiresAt else { return false }
            return end.timeIntervalSince(now) <= Self.warningLead(lease: w.spec.lease?.seconds) && now < end
        }
    }

    /// A time as the messages print it (UTC, to the second).
    public static func timestamp(_ date: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime]
        return f.string(from: date)
    }
}

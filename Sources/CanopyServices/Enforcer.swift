import CanopyCore
import Foundation

/// Time-based rules over running workloads, as a pure decision: which must stop now, and why: the max duration,
/// and for interactive workloads the lease and the idle timeout of their queue.
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
    public func due(_ workloads: some Sequence<Workload>, now: Date, idleTimeout: (Workload) -> Int? = { _ in nil }) -> [Due] {
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
            if let limit = idleTimeout(w), let since = Self.idleSince(w), w.phase == .running, now.timeIntervalSince(since) >= Double(limit) {
                return Due(
                    workloadID: w.id,
                    reason: Reason(
                        .idleTimeout,
                        "no activity for \(Quantity.formatDuration(limit)) (last: \(w.lastActivitySource ?? "start") at \(Self.timestamp(since))); restart it with canopy restart \(w.id)"
                    ))
            }
            return nil
        }
    }

    /// Since when an interactive workload counts as idle: its last activity, else its start.
    public static func idleSince(_ w: Workload) -> Date? {
        guard w.spec.kind == .interactive else { return nil }
        return w.lastActivityAt ?? w.startedAt
    }

    /// The running interactive workloads that will be stopped for idleness within the warning lead of their
    /// timeout, and were not warned since their last activity.
    public func idleWarnings(_ workloads: some Sequence<Workload>, now: Date, idleTimeout: (Workload) -> Int?) -> [Workload] {
        workloads.filter { w in
            guard w.phase == .running, w.idleWarned != true, let limit = idleTimeout(w), let since = Self.idleSince(w) else { return false }
            let left = Double(limit) - now.timeIntervalSince(since)
            return left > 0 && left <= Self.warningLead(lease: limit)
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

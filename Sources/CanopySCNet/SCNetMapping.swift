import CanopyCore
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// SCNet's view of Canopy's objects: pure functions, tested table by table.
enum SCNetMapping {
    /// The instance states SCNet clients know: `Waiting`, `Deploying`, `Running`, `Completed`, `Failed`,
    /// `Terminated`. A stopped or cancelled instance (by the user, at its lease's end, or when idle) is
    /// `Terminated`; one still stopping shows `Running` until it is down, so a client that polls for `Terminated`
    /// after a stop knows its resources are free.
    static func state(_ phase: Phase) -> String {
        switch phase {
        case .pending: "Waiting"
        case .starting: "Deploying"
        case .running, .stopping: "Running"
        case .succeeded: "Completed"
        case .failed: "Failed"
        case .stopped, .cancelled: "Terminated"
        }
    }

    /// The phases a list's `status` filter stands for; nil for a value that is none of the six.
    static func phases(forState state: String) -> Set<Phase>? {
        let all: [Phase] = [.pending, .starting, .running, .stopping, .stopped, .succeeded, .failed, .cancelled]
        let matching = all.filter { Self.state($0).lowercased() == state.lowercased() }
        return matching.isEmpty ? nil : Set(matching)
    }

    /// `2022-05-11 19:30:34` in `zone`, "" for none. By hand: a formatter costs microseconds per call, and a list
    /// formats three times per instance.
    static func time(_ date: Date?, zone: TimeZone) -> String {
        guard let date else { return "" }
        var t = time_t(date.timeIntervalSince1970.rounded(.down)) + time_t(zone.secondsFromGMT(for: date))
        var parts = tm()
        gmtime_r(&t, &parts)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday)) \(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))"
    }

    /// Seconds as `HH:MM:SS` (hours may pass 99).
    static func clock(_ seconds: Int) -> String {
        let s = max(0, seconds)
        func two(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(two(s / 3600)):\(two(s / 60 % 60)):\(two(s % 60))"
    }

    /// A `timeoutLimit`: `HH:MM:SS` (minutes and seconds below 60, at least one second, at most ten years) or
    /// `unlimited`; nil for anything else.
    static func lease(_ text: String) -> Lease? {
        let t = text.trimmingCharacters(in: .whitespaces)
        if t.lowercased() == "unlimited" { return .unlimited }
        let parts = t.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 3, parts.allSatisfy({ !$0.isEmpty && $0.count <= 6 && $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) }),
            let h = Int(parts[0]), let m = Int(parts[1]), let s = Int(parts[2]), m < 60, s < 60
        else { return nil }
        let total = h * 3600 + m * 60 + s
        guard total >= 1, total <= Lease.maxSeconds else { return nil }
        return .seconds(total)
    }

    /// `3 核心; 1 加速器; 15.0G 内存`.
    static func resourceSpec(cpuMillis: Int, gpus: Int, memoryMiB: Int) -> String {
        let cpu = cpuMillis % 1000 == 0 ? String(cpuMillis / 1000) : String(Double(cpuMillis) / 1000)
        // In Double: a stored workload's memory is bounded by what a node has, but a multiplication must not trap.
        let tenths = Int((Double(max(0, memoryMiB)) * 10 / 1024).rounded(.toNearestOrAwayFromZero))
        return "\(cpu) 核心; \(gpus) 加速器; \(tenths / 10).\(tenths % 10)G 内存"
    }

    /// Time left on a lease as `HH:MM:SS`, `unlimited`, or `--` when the instance is not running.
    static func remainingTime(_ w: Workload, now: Date) -> String {
        guard w.phase == .running || w.phase == .starting || w.phase == .stopping else { return "--" }
        if w.spec.lease == .unlimited { return "unlimited" }
        guard let end = w.leaseExpiresAt else { return "--" }
        return clock(Int(end.timeIntervalSince(now).rounded(.down)))
    }

    /// How long it has run (this start), `--` before it starts.
    static func duration(_ w: Workload, now: Date) -> String {
        guard let start = w.startedAt else { return "--" }
        return clock(Int((w.finishedAt ?? now).timeIntervalSince(start).rounded(.down)))
    }
}

/// What SCNet says of an instance that Canopy has no field for, kept in the workload's `scnet` extension (as JSON
/// under `instance`): never in its labels, which the native API shows.
struct InstanceExtension: Codable, Sendable, Equatable {
    var taskType: String
    var acceleratorType: String
    var resourceGroup: String
    var version: String
    var imagePath: String
    var description: String
    var timeoutLimit: String
    var useStartScript: Bool
    var startScriptContent: String
    var startScriptActionScope: String
    var mounts: [InstanceRequest.MountInfo]
    var ports: [InstanceRequest.Port]
}

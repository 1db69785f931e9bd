import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Per-task resource limits through cgroups: v1 controllers (`/sys/fs/cgroup/{memory,cpu,pids}`) or the v2
/// unified hierarchy, whichever this machine lets us write; none, with a notice, where neither works.
struct Cgroups: Sendable {
    enum Mode: Sendable, Equatable {
        case v1(memory: String?, cpu: String?, freezer: String? = nil, pids: String? = nil)
        case v2(root: String)
        case none(why: String)
    }

    let mode: Mode

    /// Probes the machine: creates and removes a test group under each candidate root.
    static func detect(root: String = "/sys/fs/cgroup", name: String = "canopy") -> Cgroups {
        let fm = FileManager.default
        func writableParent(_ dir: String) -> String? {
            let parent = "\(dir)/\(name)"
            try? fm.createDirectory(atPath: parent, withIntermediateDirectories: true)
            // Unique per probe, not per process: two executors probing at once (tests do) would otherwise collide,
            // and the loser would run its tasks without limits.
            let probe = "\(parent)/probe-\(getpid())-\(UUID().uuidString.prefix(8))"
            guard (try? fm.createDirectory(atPath: probe, withIntermediateDirectories: false)) != nil else { return nil }
            rmdir(probe)
            return parent
        }
        let memory = fm.fileExists(atPath: "\(root)/memory/memory.limit_in_bytes") ? writableParent("\(root)/memory") : nil
        let cpu = fm.fileExists(atPath: "\(root)/cpu/cpu.cfs_quota_us") ? writableParent("\(root)/cpu") : nil
        // The freezer stops every process of a task at once so none can fork away while the group is killed.
        let freezer = fm.fileExists(atPath: "\(root)/freezer/freezer.state") || fm.fileExists(atPath: "\(root)/freezer/tasks") ? writableParent("\(root)/freezer") : nil
        let pids = fm.fileExists(atPath: "\(root)/pids/tasks") ? writableParent("\(root)/pids") : nil
        if memory != nil || cpu != nil { return Cgroups(mode: .v1(memory: memory, cpu: cpu, freezer: freezer, pids: pids)) }
        for unified in ["\(root)/unified", root] {
            let controllers = (try? String(contentsOfFile: "\(unified)/cgroup.controllers", encoding: .utf8)) ?? ""
            if controllers.contains("memory"), let parent = writableParent(unified) {
                for controller in ["+memory", "+cpu", "+pids"] {
                    try? controller.write(toFile: "\(parent)/cgroup.subtree_control", atomically: false, encoding: .utf8)
                }
                return Cgroups(mode: .v2(root: parent))
            }
        }
        return Cgroups(mode: .none(why: "no writable cgroup memory or cpu controller under \(root) (v1 or v2); tasks run without memory and CPU limits"))
    }

    /// A notice for the log, when limits cannot be enforced.
    var limitation: String? {
        switch mode {
        case .none(let why): why
        case .v1(let memory, let cpu, _, _) where memory == nil || cpu == nil:
            memory == nil ? "cgroup v1 memory controller not writable: memory limits are not enforced" : "cgroup v1 cpu controller not writable: CPU limits are not enforced"
        default: nil
        }
    }

    /// The directories a task's group lives in, one per controller.
    func directories(for key: String) -> [String] {
        switch mode {
        case .v1(let memory, let cpu, let freezer, let pids): [memory, cpu, freezer, pids].compactMap { $0.map { "\($0)/\(key)" } }
        case .v2(let root): ["\(root)/\(key)"]
        case .none: []
        }
    }

    /// Creates the task's groups with its limits; returns the directories the shim must join.
    func create(key: String, memoryMiB: Int, cpuMillis: Int, pidsMax: Int = Cgroups.defaultPidsMax) -> [String] {
        let dirs = directories(for: key)
        for dir in dirs { try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        let bytes = memoryMiB.multipliedReportingOverflow(by: 1_048_576)
        let limit = bytes.overflow ? Int.max : bytes.partialValue
        let period = 100_000
        let quota = max(1000, min(cpuMillis, Int.max / period) * period / 1000)
        switch mode {
        case .v1(let memory, let cpu, _, let pids):
            if let pids { write("\(pids)/\(key)/pids.max", "\(pidsMax)") }
            if let memory {
                write("\(memory)/\(key)/memory.limit_in_bytes", "\(limit)")
                // No swap beyond the limit, where the kernel offers the knob.
                write("\(memory)/\(key)/memory.memsw.limit_in_bytes", "\(limit)")
            }
            if let cpu {
                write("\(cpu)/\(key)/cpu.cfs_period_us", "\(period)")
                write("\(cpu)/\(key)/cpu.cfs_quota_us", "\(quota)")
            }
        case .v2(let root):
            write("\(root)/\(key)/memory.max", "\(limit)")
            write("\(root)/\(key)/pids.max", "\(pidsMax)")
            write("\(root)/\(key)/memory.swap.max", "0")
            write("\(root)/\(key)/cpu.max", "\(quota) \(period)")
        case .none: break
        }
        return dirs
    }

    /// Whether the kernel killed something in the task's group for lack of memory.
    /// The CPU time a task's cgroup has used, in seconds: `cpu.stat`'s usage_usec (v2) or cpuacct.usage (v1).
    func cpuSeconds(key: String) -> Double? {
        switch mode {
        case .v2(let root):
            guard let text = try? String(contentsOfFile: "\(root)/\(key)/cpu.stat", encoding: .utf8) else { return nil }
            for line in text.split(separator: "\n") where line.hasPrefix("usage_usec ") {
                return Double(line.dropFirst("usage_usec ".count)).map { $0 / 1e6 }
            }
            return nil
        case .v1(_, let cpu, _, _):
            guard let cpu, let text = try? String(contentsOfFile: "\(cpu)/\(key)/cpuacct.usage", encoding: .utf8) else { return nil }
            return Double(text.trimmingCharacters(in: .whitespacesAndNewlines)).map { $0 / 1e9 }
        case .none:
            return nil
        }
    }

    func wasOOMKilled(key: String) -> Bool {
        let file: String
        switch mode {
        case .v1(let memory?, _, _, _): file = "\(memory)/\(key)/memory.oom_control"
        case .v2(let root): file = "\(root)/\(key)/memory.events"
        default: return false
        }
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return false }
        for line in text.split(separator: "\n") {
            let f = line.split(separator: " ")
            if f.count == 2, f[0] == "oom_kill", let n = Int(f[1]), n > 0 { return true }
        }
        return false
    }

    /// How many processes and threads one task may have at once: a fork bomb stops there.
    static let defaultPidsMax = 4096

    /// The processes in the task's group (its first directory: every directory holds the same processes).
    func processes(key: String) -> [pid_t] {
        guard let dir = directories(for: key).first,
            let text = try? String(contentsOfFile: "\(dir)/cgroup.procs", encoding: .utf8)
        else { return [] }
        return text.split(separator: "\n").compactMap { pid_t($0) }
    }

    /// Kills every process in the task's group, including daemons it forked off into a session of their own, and
    /// waits (up to about two seconds) until the group is empty. cgroup v2 has `cgroup.kill`; on v1 the freezer
    /// stops the whole group first, so nothing forks while it is being killed.
    func killAll(key: String) {
        // The common case: the task's processes all ended with it.
        if processes(key: key).isEmpty { return }
        switch mode {
        case .none: return
        case .v2(let root):
            let group = "\(root)/\(key)"
            if FileManager.default.fileExists(atPath: "\(group)/cgroup.kill") { write("\(group)/cgroup.kill", "1") }
        case .v1(_, _, let freezer, _):
            if let freezer {
                let group = "\(freezer)/\(key)"
                write("\(group)/freezer.state", "FROZEN")
                for _ in 0..<100 {
                    let state = (try? String(contentsOfFile: "\(group)/freezer.state", encoding: .utf8)) ?? ""
                    if !state.hasPrefix("FREEZING") { break }
                    usleep(2000)
                }
                for pid in processes(key: key) { kill(pid, SIGKILL) }
                write("\(group)/freezer.state", "THAWED")
            }
        }
        // Whatever is left (no freezer, no cgroup.kill, or a process that raced in): kill until empty.
        for _ in 0..<200 {
            let left = processes(key: key)
            if left.isEmpty { return }
            for pid in left { kill(pid, SIGKILL) }
            usleep(10_000)
        }
    }

    /// Whether a task's processes can all be found (and killed) through its groups.
    var tracksProcesses: Bool {
        if case .none = mode { return false }
        return true
    }

    /// Removes the task's groups (they must be empty: every process in them has exited).
    func remove(key: String) {
        for dir in directories(for: key) { rmdir(dir) }
    }

    private func write(_ path: String, _ value: String) {
        guard let fh = FileHandle(forWritingAtPath: path) else { return }
        try? fh.write(contentsOf: Data(value.utf8))
        try? fh.close()
    }
}

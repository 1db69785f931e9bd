import Foundation

/// Per-task resource limits through cgroups: v1 controllers (`/sys/fs/cgroup/{memory,cpu,pids}`) or the v2
/// unified hierarchy, whichever this machine lets us write; none, with a notice, where neither works.
struct Cgroups: Sendable {
    enum Mode: Sendable, Equatable {
        case v1(memory: String?, cpu: String?)
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
            let probe = "\(parent)/probe-\(getpid())"
            guard (try? fm.createDirectory(atPath: probe, withIntermediateDirectories: false)) != nil else { return nil }
            rmdir(probe)
            return parent
        }
        let memory = fm.fileExists(atPath: "\(root)/memory/memory.limit_in_bytes") ? writableParent("\(root)/memory") : nil
        let cpu = fm.fileExists(atPath: "\(root)/cpu/cpu.cfs_quota_us") ? writableParent("\(root)/cpu") : nil
        if memory != nil || cpu != nil { return Cgroups(mode: .v1(memory: memory, cpu: cpu)) }
        for unified in ["\(root)/unified", root] {
            let controllers = (try? String(contentsOfFile: "\(unified)/cgroup.controllers", encoding: .utf8)) ?? ""
            if controllers.contains("memory"), let parent = writableParent(unified) {
                try? "+memory +cpu".write(toFile: "\(parent)/cgroup.subtree_control", atomically: false, encoding: .utf8)
                return Cgroups(mode: .v2(root: parent))
            }
        }
        return Cgroups(mode: .none(why: "no writable cgroup memory or cpu controller under \(root) (v1 or v2); tasks run without memory and CPU limits"))
    }

    /// A notice for the log, when limits cannot be enforced.
    var limitation: String? {
        switch mode {
        case .none(let why): why
        case .v1(let memory, let cpu) where memory == nil || cpu == nil:
            memory == nil ? "cgroup v1 memory controller not writable: memory limits are not enforced" : "cgroup v1 cpu controller not writable: CPU limits are not enforced"
        default: nil
        }
    }

    /// The directories a task's group lives in, one per controller.
    func directories(for key: String) -> [String] {
        switch mode {
        case .v1(let memory, let cpu): [memory, cpu].compactMap { $0.map { "\($0)/\(key)" } }
        case .v2(let root): ["\(root)/\(key)"]
        case .none: []
        }
    }

    /// Creates the task's groups with its limits; returns the directories the shim must join.
    func create(key: String, memoryMiB: Int, cpuMillis: Int) -> [String] {
        let dirs = directories(for: key)
        for dir in dirs { try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        let bytes = memoryMiB * 1_048_576
        let period = 100_000
        let quota = max(1000, cpuMillis * period / 1000)
        switch mode {
        case .v1(let memory, let cpu):
            if let memory {
                write("\(memory)/\(key)/memory.limit_in_bytes", "\(bytes)")
                // No swap beyond the limit, where the kernel offers the knob.
                write("\(memory)/\(key)/memory.memsw.limit_in_bytes", "\(bytes)")
            }
            if let cpu {
                write("\(cpu)/\(key)/cpu.cfs_period_us", "\(period)")
                write("\(cpu)/\(key)/cpu.cfs_quota_us", "\(quota)")
            }
        case .v2(let root):
            write("\(root)/\(key)/memory.max", "\(bytes)")
            write("\(root)/\(key)/memory.swap.max", "0")
            write("\(root)/\(key)/cpu.max", "\(quota) \(period)")
        case .none: break
        }
        return dirs
    }

    /// Whether the kernel killed something in the task's group for lack of memory.
    func wasOOMKilled(key: String) -> Bool {
        let file: String
        switch mode {
        case .v1(let memory?, _): file = "\(memory)/\(key)/memory.oom_control"
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

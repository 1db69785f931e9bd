import CanopyCore
import CanopySQLite
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The path of a binary SwiftPM built next to this one.
func siblingBinary(_ name: String) -> String {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    return (exe as NSString).deletingLastPathComponent + "/" + name
}

func temporaryDirectory(_ label: String) throws -> String {
    let path = "/tmp/canopy-bench-\(label)-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
    return path
}

/// What the machine itself can do, measured in the same run as the server's figures.
enum Baselines {
    /// Appends of 128 bytes, each followed by fsync, for two seconds, in a file under /tmp (where the bench's data dirs live).
    static func fsyncRate() throws -> Double {
        let dir = try temporaryDirectory("fsync")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fd = open(dir + "/journal", O_WRONLY | O_CREAT | O_APPEND, 0o644)
        guard fd >= 0 else { throw BenchError("open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let record = [UInt8](repeating: 0x2a, count: 128)
        var count = 0
        let start = monotonicNow()
        while monotonicNow() - start < 2 {
            _ = record.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            fsync(fd)
            count += 1
        }
        return Double(count) / (monotonicNow() - start)
    }

    /// posix_spawn + waitpid of /bin/true, one at a time: the floor under any process start.
    static func spawnRate() throws -> (rate: Double, p50: Double) {
        var samples: [Double] = []
        let start = monotonicNow()
        let args: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/true"), nil]
        defer { free(args[0]) }
        while monotonicNow() - start < 2 {
            let t0 = monotonicNow()
            var pid: pid_t = 0
            let rc = args.withUnsafeBufferPointer { posix_spawn(&pid, "/bin/true", nil, nil, UnsafeMutablePointer(mutating: $0.baseAddress!), environ) }
            guard rc == 0 else { throw BenchError("posix_spawn: \(rc)") }
            var status: Int32 = 0
            waitpid(pid, &status, 0)
            samples.append(monotonicNow() - t0)
        }
        return (Double(samples.count) / (monotonicNow() - start), quantile(samples, 0.5))
    }
}

/// A real `canopy serve` child on a free loopback port, with its own data directory.
/// Immutable once started (the client threads read only its port and token).
final class ServerUnderTest: @unchecked Sendable {
    let dataDir: String
    let process = Process()
    let port: Int
    let token = "bench-admin-token"

    init(dataDir: String, extra: [String] = []) throws {
        self.dataDir = dataDir
        process.executableURL = URL(fileURLWithPath: siblingBinary("canopy"))
        process.arguments = ["serve", "--data-dir", dataDir, "--port", "0", "--log-level", "warning", "--stop-grace", "1"] + extra
        var env = ProcessInfo.processInfo.environment
        env["CANOPY_ADMIN_TOKEN"] = token
        process.environment = env
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let started = monotonicNow()
        var found: Int?
        while monotonicNow() - started < 60, process.isRunning {
            if let url = try? String(contentsOfFile: dataDir + "/url", encoding: .utf8),
                let p = url.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ":").last.flatMap({ Int($0) })
            {
                found = p
                break
            }
            usleep(10_000)
        }
        guard let found else { throw BenchError("canopy serve did not start (data dir \(dataDir))") }
        port = found
    }

    /// Resident and peak resident memory of the server, in MiB, from /proc.
    func memory() -> (rss: Double, peak: Double) {
        let status = (try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8)) ?? ""
        func field(_ name: String) -> Double {
            for line in status.split(separator: "\n") where line.hasPrefix(name + ":") {
                let kb = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Double($0) } ?? 0
                return kb / 1024
            }
            return 0
        }
        return (field("VmRSS"), field("VmHWM"))
    }

    /// CPU seconds the server has used (user + system).
    func cpuSeconds() -> Double {
        let stat = (try? String(contentsOfFile: "/proc/\(process.processIdentifier)/stat", encoding: .utf8)) ?? ""
        let fields = stat.split(separator: ")").last?.split(separator: " ") ?? []
        // After the command: state is field 0, utime 11, stime 12 (clock ticks).
        guard fields.count > 12, let u = Double(fields[11]), let s = Double(fields[12]) else { return 0 }
        return (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    func stop() {
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        if ProcessInfo.processInfo.environment["CANOPY_BENCH_KEEP"] == nil {
            try? FileManager.default.removeItem(atPath: dataDir)
        } else {
            say("kept data dir \(dataDir)")
        }
    }

    func client() throws -> BlockingHTTPClient { try BlockingHTTPClient(port: port, token: token) }

    /// Submits `total` workloads with `body`, from `clients` keep-alive clients at once; throws the first error.
    func submitAll(_ total: Int, clients: Int, body: String) throws {
        let failures = Samples()
        onThreads(clients) { k in
            do {
                let c = try self.client()
                for _ in stride(from: k, to: total, by: clients) {
                    let r = try c.request("POST", "/api/v1/workloads", body: body)
                    guard r.status == 201 else { throw BenchError("submit: \(r.status) \(r.text)") }
                }
            } catch {
                failures.fail("\(error)")
            }
        }
        if let first = failures.failures.first { throw BenchError(first) }
    }

    /// Waits until no workload is unfinished (at most `timeout` seconds after `start`); returns how many failed or
    /// were cancelled.
    func waitUntilIdle(since start: Double, timeout: Double, what: String) throws -> Int {
        let client = try client()
        while true {
            let r = try client.request("GET", "/api/v1/workloads?phase=Pending,Starting,Running&limit=1")
            if r.text.contains(#""items":[]"#) || r.text.contains(#""items" : []"#) { break }
            guard monotonicNow() - start < timeout else { throw BenchError("\(what) did not finish within \(Int(timeout)) s") }
            usleep(5_000)
        }
        let failed = try client.request("GET", "/api/v1/workloads?phase=Failed,Cancelled&limit=1000")
        return failed.text.components(separatedBy: #""id":"#).count - 1
    }
}

/// Thread-safe sample collection.
final class Samples: Sendable {
    private let values = Mutex<[Double]>([])
    private let errors = Mutex<[String]>([])
    func add(_ v: [Double]) { values.withLock { $0 += v } }
    func fail(_ e: String) { errors.withLock { $0.append(e) } }
    var all: [Double] { values.withLock { $0 } }
    var failures: [String] { errors.withLock { $0 } }
}

/// Prints a line at once, even into a pipe.
func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }

func verdict(_ ok: Bool) -> String { ok ? "meets target" : "BELOW TARGET" }

enum Benchmarks {
    /// Held submissions from 64 keep-alive clients: each is durable (group commit, fsync) before its 201.
    static func submissions(seconds: Double, fsyncRate: Double) throws {
        let server = try ServerUnderTest(dataDir: try temporaryDirectory("submit"))
        defer { server.stop() }
        let body = #"{"command": ["true"], "hold": true}"#
        let clients = 64
        // Warm up: connections, caches, the database file's first pages.
        onThreads(clients) { _ in
            guard let c = try? server.client() else { return }
            for _ in 0..<10 { _ = try? c.request("POST", "/api/v1/workloads", body: body) }
        }
        let samples = Samples()
        let start = monotonicNow()
        let cpuBefore = server.cpuSeconds()
        onThreads(clients) { _ in
            var local: [Double] = []
            do {
                let c = try server.client()
                while monotonicNow() - start < seconds {
                    let t0 = monotonicNow()
                    let r = try c.request("POST", "/api/v1/workloads", body: body)
                    guard r.status == 201 else { throw BenchError("status \(r.status): \(r.text)") }
                    local.append(monotonicNow() - t0)
                }
            } catch {
                samples.fail("\(error)")
            }
            samples.add(local)
        }
        let elapsed = monotonicNow() - start
        let cpu = server.cpuSeconds() - cpuBefore
        let latencies = samples.all
        let rate = Double(latencies.count) / elapsed
        say(
            String(
                format: "submit    durable held submissions, %d clients      %8.0f /s   p50 %.1f ms  p99 %.1f ms  (%.1fx fsync rate; server CPU %.0f%%)  target >= 2000/s: %@",
                clients, rate, quantile(latencies, 0.5) * 1000, quantile(latencies, 0.99) * 1000, fsyncRate > 0 ? rate / fsyncRate : 0,
                cpu / elapsed * 100, verdict(rate >= 2000)))
        if let first = samples.failures.first { say("          \(samples.failures.count) client errors, first: \(first)") }
    }

    /// Submit-to-process-started latency, and 1,000 trivial workloads submitted and finished.
    static func startLatency(spawnRate: Double) throws {
        let server = try ServerUnderTest(dataDir: try temporaryDirectory("start"))
        defer { server.stop() }
        let client = try server.client()
        // One at a time: the task prints the wall-clock time it started (date is exec'd directly, no shell).
        var latencies: [Double] = []
        let small = #""resources": {"cpu": "100m", "memory": "32Mi"}"#
        for n in 0..<220 {
            let t0 = realtimeNow()
            let r = try client.request("POST", "/api/v1/workloads", body: #"{"command": ["/bin/date", "+%s.%N"], \#(small)}"#)
            guard r.status == 201, let id = idOf(r.body) else { throw BenchError("submit: \(r.status) \(r.text)") }
            let log = server.dataDir + "/workloads/\(id)/task-0/stdout.log"
            var started: Double?
            let deadline = monotonicNow() + 10
            while started == nil, monotonicNow() < deadline {
                if let text = try? String(contentsOfFile: log, encoding: .utf8), text.hasSuffix("\n") {
                    started = Double(text.trimmingCharacters(in: .whitespacesAndNewlines))
                } else {
                    usleep(200)
                }
            }
            guard let started else { throw BenchError("workload \(id) did not start within 10 s") }
            if n >= 20 { latencies.append(started - t0) }  // the first few warm up caches and the scheduler
        }
        let p50 = quantile(latencies, 0.5), p99 = quantile(latencies, 0.99)
        say(
            String(
                format: "start     submit -> process started (%d, serial)   p50 %.1f ms  p99 %.1f ms  targets p50 <= 10, p99 <= 100: %@",
                latencies.count, p50 * 1000, p99 * 1000, verdict(p50 <= 0.010 && p99 <= 0.100)))

        // 1,000 `true` workloads from 16 clients, then wait for the last to finish.
        let total = 1000
        let start = monotonicNow()
        try server.submitAll(total, clients: 16, body: #"{"command": ["true"], \#(small)}"#)
        let submitted = monotonicNow() - start
        let failedCount = try server.waitUntilIdle(since: start, timeout: 120, what: "1,000 workloads")
        let elapsed = monotonicNow() - start
        say(
            String(
                format: "start     1,000 `true` submitted and finished       %8.2f s   (submitted in %.2f s; %.0f workloads/s; %d failed; spawn baseline %.0f/s)  target <= 10 s: %@",
                elapsed, submitted, Double(total) / elapsed, failedCount, spawnRate, verdict(elapsed <= 10 && failedCount == 0)))
    }

    /// Server memory with a long history, and the cost of listing the newest page.
    static func history(count: Int) async throws {
        let dir = try temporaryDirectory("history")
        // Seed finished workloads straight into the store the server will open, through its own adapter.
        let seedStart = monotonicNow()
        do {
            let store = try SQLiteStore(path: dir + "/canopy.sqlite")
            let now = Date()
            let chunk = 2000
            for base in stride(from: 0, to: count, by: chunk) {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for n in base..<min(count, base + chunk) {
                        group.addTask {
                            var w = Workload(
                                id: IDGenerator.random(), tenant: "default", owner: "admin",
                                spec: WorkloadSpec(name: "train-\(n)", command: ["python3", "train.py", "--epochs", "3"], env: ["SEED": "\(n)"]),
                                createdAt: now.addingTimeInterval(Double(n - count)))
                            w.tasks[0].phase = .succeeded
                            w.tasks[0].node = "local"
                            w.tasks[0].backendID = "\(1000 + n)"
                            w.tasks[0].exitCode = 0
                            w.tasks[0].startedAt = w.createdAt
                            w.tasks[0].finishedAt = w.createdAt.addingTimeInterval(0.5)
                            for next in [Phase.starting, .running, .succeeded] {
                                guard w.move(to: next, at: w.createdAt.addingTimeInterval(next == .succeeded ? 0.5 : 0)) else {
                                    throw BenchError("seed: the state machine refused \(w.phase.rawValue) -> \(next.rawValue)")
                                }
                            }
                            w.exitCode = 0
                            w.version = 3
                            _ = try await store.insert(w)
                        }
                    }
                    try await group.waitForAll()
                }
            }
        }
        let seeded = monotonicNow() - seedStart
        let bootStart = monotonicNow()
        let server = try ServerUnderTest(dataDir: dir)
        defer { server.stop() }
        let boot = monotonicNow() - bootStart
        let client = try server.client()
        var latencies: [Double] = []
        var newest = ""
        for n in 0..<220 {
            let t0 = monotonicNow()
            let r = try client.request("GET", "/api/v1/workloads?limit=100")
            guard r.status == 200 else { throw BenchError("list: \(r.status) \(r.text)") }
            if n >= 20 { latencies.append(monotonicNow() - t0) }
            newest = r.text
        }
        guard newest.contains("train-\(count - 1)") else { throw BenchError("the newest page does not start with the newest workload") }
        // And the pages behind it: walk ten pages by cursor.
        var cursorLatencies: [Double] = []
        var path = "/api/v1/workloads?limit=100"
        for _ in 0..<10 {
            let t0 = monotonicNow()
            let r = try client.request("GET", path)
            cursorLatencies.append(monotonicNow() - t0)
            guard let next = cursorOf(r.body) else { break }
            path = "/api/v1/workloads?limit=100&cursor=\(next)"
        }
        let memory = server.memory()
        let p50 = quantile(latencies, 0.5), p99 = quantile(latencies, 0.99)
        say(String(format: "history   %d finished workloads seeded in %.1f s; server ready in %.2f s", count, seeded, boot))
        say(
            String(
                format: "history   server RSS with that history              %8.1f MiB (peak %.1f MiB)  target <= 150 MiB: %@", memory.rss, memory.peak,
                verdict(memory.peak <= 150)))
        say(
            String(
                format: "history   list newest 100                           p50 %.1f ms  p99 %.1f ms  (next pages by cursor p50 %.1f ms)  target <= 20 ms: %@",
                p50 * 1000, p99 * 1000, quantile(cursorLatencies, 0.5) * 1000, verdict(p50 <= 0.020)))
    }

    static func idOf(_ body: [UInt8]) -> String? {
        (try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any])?["id"] as? String
    }

    static func cursorOf(_ body: [UInt8]) -> String? {
        (try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any])?["nextCursor"] as? String
    }
}

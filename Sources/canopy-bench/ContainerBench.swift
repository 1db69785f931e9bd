import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Containers: Canopy's container runtime against the same engine driven raw, in the same run.
///
/// Needs a Docker-compatible engine with the test image (`scripts/dockerd.sh up DIR` makes one: DIR/docker.sock,
/// image busybox:canopy-test, root file system DIR/busybox-rootfs.tar).
enum ContainerBench {
    static let image = "busybox:canopy-test"

    static func run(dockerDir: String) throws {
        let socket = dockerDir + "/docker.sock"
        let raw = try BlockingHTTPClient(unixSocket: socket)
        guard try raw.request("GET", "/_ping").status == 200 else { throw BenchError("no engine answers on \(socket)") }

        // Baseline: create + start a container that prints the time it started; the latency is that time minus
        // the moment before create. Then wait and remove it.
        var rawLatencies: [Double] = []
        for n in 0..<60 {
            let t0 = realtimeNow()
            let id = try create(raw, cmd: ["/bin/adjtimex"])
            try start(raw, id)
            _ = try raw.request("POST", "/v1.41/containers/\(id)/wait")
            let logs = try raw.request("GET", "/v1.41/containers/\(id)/logs?stdout=1")
            let text = String(decoding: demultiplex(logs.body), as: UTF8.self)
            _ = try raw.request("DELETE", "/v1.41/containers/\(id)?force=1")
            guard let started = clock(text) else { throw BenchError("raw container printed \(text)") }
            if n >= 10 { rawLatencies.append(started - t0) }
        }

        let server = try ServerUnderTest(
            dataDir: try temporaryDirectory("containers"), extra: ["--container-engine", "unix://" + socket, "--cpus", "4", "--memory", "8Gi"])
        defer { server.stop() }
        let imported = try runSibling(
            ["images", "import", dockerDir + "/busybox-rootfs.tar", "--name", "busybox:bench", "--public"], port: server.port, token: server.token)
        guard imported == 0 else { throw BenchError("canopy images import failed (\(imported))") }
        let client = try server.client()
        // 250m CPU on 4 declared CPUs: at most 16 containers at once, the raw loop's concurrency below.
        let small = #""image": "busybox:bench", "resources": {"cpu": "250m", "memory": "32Mi"}"#
        var latencies: [Double] = []
        for n in 0..<60 {
            let t0 = realtimeNow()
            let r = try client.request("POST", "/api/v1/workloads", body: #"{"command": ["/bin/adjtimex"], \#(small)}"#)
            guard r.status == 201, let id = Benchmarks.idOf(r.body) else { throw BenchError("submit: \(r.status) \(r.text)") }
            let log = server.dataDir + "/workloads/\(id)/task-0/stdout.log"
            var started: Double?
            let deadline = monotonicNow() + 20
            while started == nil, monotonicNow() < deadline {
                if let text = try? String(contentsOfFile: log, encoding: .utf8), text.contains("return value") {
                    started = clock(text)
                } else {
                    usleep(500)
                }
            }
            guard let started else { throw BenchError("workload \(id) did not start within 20 s") }
            if n >= 10 { latencies.append(started - t0) }
        }
        let rawP50 = quantile(rawLatencies, 0.5), p50 = quantile(latencies, 0.5)
        say(String(format: "baseline  raw create+start -> container started     p50 %.1f ms  p99 %.1f ms", rawP50 * 1000, quantile(rawLatencies, 0.99) * 1000))
        say(
            String(
                format: "container submit -> container started (%d, serial) p50 %.1f ms  p99 %.1f ms  = %.2fx raw  target <= 1.5x: %@",
                latencies.count, p50 * 1000, quantile(latencies, 0.99) * 1000, p50 / rawP50, verdict(p50 <= 1.5 * rawP50)))

        // 200 trivial containers: raw, 16 at a time (create, start, wait, remove each).
        let total = 200, clients = 16
        let failures = Samples()
        var t = monotonicNow()
        onThreads(clients) { k in
            do {
                let c = try BlockingHTTPClient(unixSocket: socket)
                for _ in stride(from: k, to: total, by: clients) {
                    let id = try create(c, cmd: ["true"])
                    try start(c, id)
                    _ = try c.request("POST", "/v1.41/containers/\(id)/wait")
                    _ = try c.request("DELETE", "/v1.41/containers/\(id)?force=1")
                }
            } catch {
                failures.fail("\(error)")
            }
        }
        if let first = failures.failures.first { throw BenchError(first) }
        let rawRate = Double(total) / (monotonicNow() - t)

        // The same through Canopy: submitted at once from 16 clients, until the last has finished.
        t = monotonicNow()
        try server.submitAll(total, clients: clients, body: #"{"command": ["true"], \#(small)}"#)
        let failedCount = try server.waitUntilIdle(since: t, timeout: 300, what: "200 container workloads")
        let rate = Double(total) / (monotonicNow() - t)
        say(String(format: "baseline  raw create/start/wait/remove, 16 at once  %8.1f containers/s", rawRate))
        say(
            String(
                format: "container 200 `true` submitted and finished          %8.1f workloads/s = %.0f%% of raw (%d failed)  target >= 80%%: %@",
                rate, rate / rawRate * 100, failedCount, verdict(rate >= 0.8 * rawRate && failedCount == 0)))
        let mem = server.memory()
        say(String(format: "container server memory after the run              RSS %.1f MiB  peak %.1f MiB", mem.rss, mem.peak))
    }

    /// The wall-clock time busybox's `adjtimex` printed (its `time.tv_sec` and `time.tv_usec` lines): the moment
    /// the container's first process ran (the test image's `date` has no sub-second format).
    static func clock(_ text: String) -> Double? {
        var sec: Double?, usec: Double?
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":").map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2 else { continue }
            if parts[0] == "time.tv_sec" { sec = Double(parts[1]) }
            if parts[0] == "time.tv_usec" { usec = Double(parts[1]) }
        }
        guard let sec, let usec else { return nil }
        return sec + usec / 1e6
    }

    /// The payload of the engine's multiplexed log frames (an 8-byte header each, the length in its last 4 bytes).
    static func demultiplex(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [], i = 0
        while i + 8 <= bytes.count {
            let n = Int(bytes[i + 4]) << 24 | Int(bytes[i + 5]) << 16 | Int(bytes[i + 6]) << 8 | Int(bytes[i + 7])
            out += bytes[(i + 8)..<min(bytes.count, i + 8 + n)]
            i += 8 + n
        }
        return out
    }

    static func create(_ c: BlockingHTTPClient, cmd: [String]) throws -> String {
        let body = try String(decoding: JSONSerialization.data(withJSONObject: ["Image": image, "Cmd": cmd]), as: UTF8.self)
        let r = try c.request("POST", "/v1.41/containers/create", body: body)
        guard r.status == 201, let id = (try? JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any])?["Id"] as? String else {
            throw BenchError("create: \(r.status) \(r.text)")
        }
        return id
    }

    static func start(_ c: BlockingHTTPClient, _ id: String) throws {
        let r = try c.request("POST", "/v1.41/containers/\(id)/start")
        guard r.status == 204 else { throw BenchError("start: \(r.status) \(r.text)") }
    }

    /// Runs the `canopy` binary beside this one against the server; returns its exit status.
    static func runSibling(_ args: [String], port: Int, token: String) throws -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: siblingBinary("canopy"))
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        env["CANOPY_URL"] = "http://127.0.0.1:\(port)"
        env["CANOPY_TOKEN"] = token
        p.environment = env
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        return p.terminationStatus
    }
}

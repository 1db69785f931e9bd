import CanopyCore
import CanopyServices
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Interactive instances' figures: the CPU one pass of the lease and idle enforcer costs with 10,000 running
/// instances, and how long `canopy jupyter` takes to answer through the proxy next to JupyterLab's own start.
enum InteractiveBench {
    /// CPU time of the calling thread, in seconds.
    static func threadCPU() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }

    /// The controller's enforcement pass (`Enforcer.due`, `idleWarnings`, `warnings`, over a dictionary of live
    /// workloads, with the queue lookup it makes) with `count` running interactive instances, none of them due:
    /// the steady state it runs in four times a second. Baseline: a pass that reads each instance's lease end.
    static func enforcer(count: Int = 10_000, passes: Int = 200) {
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        var active: [String: Workload] = [:]
        for i in 0..<count {
            var spec = WorkloadSpec(kind: .interactive, queue: i % 2 == 0 ? "dev" : "default", command: ["sleep", "infinity"], lease: .seconds(8 * 3600))
            spec.maxDurationSeconds = i % 3 == 0 ? 86_400 : nil
            var w = Workload(id: "w\(i)", tenant: "t", owner: "u", spec: spec, createdAt: t0)
            w = Transitions.placed(w, placements: [BackendPlacement(taskIndex: 0, node: "n")], at: t0)
            w = Transitions.launched(w, task: 0, runtime: .process, launched: LaunchedTask(handle: "\(i)"), at: t0)
            active[w.id] = w
        }
        let queues: [String: Int?] = ["dev": 3600, "default": nil]
        let now = t0.addingTimeInterval(600)
        let enforcer = Enforcer()
        var sink = 0

        var start = threadCPU()
        for _ in 0..<passes {
            for w in active.values where w.leaseExpiresAt.map({ $0 <= now }) ?? false { sink += 1 }
        }
        let baseline = (threadCPU() - start) / Double(passes)

        start = threadCPU()
        for _ in 0..<passes {
            let idleTimeout: (Workload) -> Int? = { w in w.spec.kind == .interactive ? queues[w.spec.queue] ?? nil : nil }
            sink += enforcer.due(active.values, now: now, idleTimeout: idleTimeout).count
            sink += enforcer.idleWarnings(active.values, now: now, idleTimeout: idleTimeout).count
            sink += enforcer.warnings(active.values, now: now).count
        }
        let pass = (threadCPU() - start) / Double(passes)
        say(String(format: "baseline  a pass reading %d instances' lease ends       %8.2f ms CPU", count, baseline * 1000))
        say(
            String(
                format: "enforcer  one lease and idle pass over %d instances  %8.2f ms CPU  (target <= 50 ms: %@)%@", count, pass * 1000,
                verdict(pass <= 0.05), sink < 0 ? "" : ""))
    }

    /// JupyterLab's own start (its `jupyter lab` run directly, until `api/status` answers) against `canopy jupyter`
    /// (submit, start through Canopy, until it answers through the proxy), each three times, same run.
    static func jupyter(venv: String) throws {
        guard FileManager.default.isExecutableFile(atPath: venv + "/bin/jupyter") else {
            return say("jupyter   (no JupyterLab in \(venv); scripts/test.sh installs one; skipped)")
        }
        let dir = try temporaryDirectory("jupyter")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var direct: [Double] = []
        for round in 0..<3 {
            let port = 18_800 + round
            let p = Process()
            p.executableURL = URL(fileURLWithPath: venv + "/bin/jupyter")
            p.arguments = [
                "lab", "--no-browser", "--ip=127.0.0.1", "--port=\(port)", "--ServerApp.port_retries=0", "--ServerApp.token=bench", "--allow-root",
                "--ServerApp.root_dir=\(dir)",
            ]
            p.environment = ["PATH": venv + "/bin:/usr/bin:/bin", "HOME": dir]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            let t0 = monotonicNow()
            try p.run()
            defer {
                p.terminate()
                p.waitUntilExit()
            }
            while monotonicNow() - t0 < 60 {
                if try curlStatus("http://127.0.0.1:\(port)/api/status", header: "Authorization: token bench") == 200 { break }
                usleep(20_000)
            }
            direct.append(monotonicNow() - t0)
        }
        let server = try ServerUnderTest(dataDir: try temporaryDirectory("jupyter-server"))
        defer { server.stop() }
        let env = ["CANOPY_URL": "http://127.0.0.1:\(server.port)", "CANOPY_TOKEN": server.token]
        var through: [Double] = []
        for _ in 0..<3 {
            let t0 = monotonicNow()
            let out = try capture([siblingBinary("canopy"), "jupyter", "--env", "PATH=\(venv)/bin:/usr/bin:/bin", "--memory", "2Gi"], env: env)
            through.append(monotonicNow() - t0)
            guard let id = out.split(separator: "\n").first.map(String.init), out.contains("url:") else { throw BenchError("canopy jupyter: \(out)") }
            _ = try capture([siblingBinary("canopy"), "stop", id], env: env)
            let stopDeadline = monotonicNow() + 30
            while monotonicNow() < stopDeadline, !(try capture([siblingBinary("canopy"), "show", id, "-o", "json"], env: env)).contains("\"Stopped\"") {
                usleep(100_000)
            }
        }
        let d = quantile(direct, 0.5), c = quantile(through, 0.5)
        say(String(format: "baseline  jupyter lab started directly, until it answers %8.2f s  (median of 3)", d))
        say(String(format: "jupyter   canopy jupyter, until it answers through the proxy %6.2f s  (median of 3): %.2fx (target <= 1.5x: %@)", c, c / d, verdict(c <= 1.5 * d)))
    }

    /// The HTTP status of a GET (Python's standard library, so that the baseline pays what a client pays), 0 when
    /// nothing answers.
    static func curlStatus(_ url: String, header: String) throws -> Int {
        let out = try capture(
            [
                "/usr/bin/python3", "-c",
                "import sys, urllib.request\ntry: print(urllib.request.urlopen(urllib.request.Request(sys.argv[1], headers={sys.argv[2].split(':')[0]: sys.argv[2].split(': ', 1)[1]}), timeout=2).status)\nexcept Exception as e: print(getattr(e, 'code', 0))",
                url, header,
            ], env: [:])
        return Int(out.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
    }

    /// Runs a program to its end; what it printed on standard output.
    static func capture(_ argv: [String], env extra: [String: String]) throws -> String {
        try ExecBench.runProgram(argv, env: extra, capture: true).output
    }
}

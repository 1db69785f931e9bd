import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// What `canopy exec` and Canopy's SSH server cost, in the same run as their baselines: the CLI's own round trip
/// (`canopy show`, one API request) for latency, and the same bytes produced and read on this machine without
/// Canopy for throughput. SSH runs where OpenSSH's client is installed.
enum ExecBench {
    static func run(rounds: Int = 20) throws {
        let dir = try temporaryDirectory("exec")
        let server = try ServerUnderTest(dataDir: dir, extra: ["--ssh-port", "0"])
        defer { server.stop() }
        let api = try server.client()
        let created = try api.request(
            "POST", "/api/v1/workloads", body: #"{"kind": "interactive", "resources": {"cpu": 1, "memory": "1Gi"}, "command": ["sleep", "600"]}"#)
        guard created.status == 201, let id = Benchmarks.idOf(created.body) else { throw BenchError("submit: \(created.status) \(created.text)") }
        defer { _ = try? api.request("POST", "/api/v1/workloads/\(id)/stop") }
        let deadline = monotonicNow() + 30
        while monotonicNow() < deadline {
            let w = try api.request("GET", "/api/v1/workloads/\(id)")
            if w.text.contains(#""phase" : "Running""#) || w.text.contains(#""phase":"Running""#) { break }
            usleep(100_000)
        }
        let env = ["CANOPY_URL": "http://127.0.0.1:\(server.port)", "CANOPY_TOKEN": server.token]

        func latency(_ label: String, _ argv: [String], environment: [String: String] = [:]) throws {
            var samples: [Double] = []
            for _ in 0..<rounds {
                let t0 = monotonicNow()
                let status = try run(argv, env: environment)
                guard status == 0 else { throw BenchError("\(label): exit status \(status)") }
                samples.append(monotonicNow() - t0)
            }
            say(
                String(
                    format: "exec      %@ p50 %7.1f ms  p99 %7.1f ms  (%d runs)", label.padding(toLength: 36, withPad: " ", startingAt: 0),
                    quantile(samples, 0.5) * 1000, quantile(samples, 0.99) * 1000, rounds))
        }
        /// The best of 3 runs moving `amount` units (MiB or MB): the rate, also printed.
        @discardableResult
        func rate(_ label: String, _ argv: [String], environment: [String: String] = [:], amount: Double, unit: String, what: String) throws -> Double {
            var best = 0.0
            for _ in 0..<3 {
                let t0 = monotonicNow()
                let status = try run(argv, env: environment)
                guard status == 0 else { throw BenchError("\(label): exit status \(status)") }
                best = max(best, amount / (monotonicNow() - t0))
            }
            say(String(format: "exec      %@ %7.0f %@ (%@, best of 3)", label.padding(toLength: 36, withPad: " ", startingAt: 0), best, unit, what))
            return best
        }
        func throughput(_ label: String, _ argv: [String], environment: [String: String] = [:]) throws {
            try rate(label, argv, environment: environment, amount: 256, unit: "MiB/s", what: "256 MiB to /dev/null")
        }
        let canopy = siblingBinary("canopy")
        try latency("baseline: canopy show (one request)", [canopy, "show", id, "-o", "json"], environment: env)
        try latency("canopy exec ID -- true", [canopy, "exec", id, "--", "true"], environment: env)
        try throughput("baseline: head | cat, no Canopy", ["/bin/sh", "-c", "head -c 268435456 /dev/zero | cat"])
        try throughput("canopy exec ID -- head", [canopy, "exec", id, "--", "head", "-c", "268435456", "/dev/zero"], environment: env)

        // SSH, with a key of its own.
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/ssh"), FileManager.default.isExecutableFile(atPath: "/usr/bin/ssh-keygen") else {
            return say("exec      (ssh: no OpenSSH client here; skipped)")
        }
        guard try run(["/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", dir + "/key"]) == 0,
            let pub = try? String(contentsOfFile: dir + "/key.pub", encoding: .utf8)
        else { throw BenchError("ssh-keygen failed") }
        let added = try api.request("POST", "/api/v1/ssh-keys", body: #"{"publicKey": \#(ProxyBench.jsonString(pub.trimmingCharacters(in: .whitespacesAndNewlines)))}"#)
        guard added.status == 201 else { throw BenchError("ssh-keys: \(added.status) \(added.text)") }
        let info = try api.request("GET", "/api/v1/ssh")
        guard let port = ((try? JSONSerialization.jsonObject(with: Data(info.body))) as? [String: Any])?["port"] as? Int else {
            throw BenchError("no SSH server: \(info.text)")
        }
        let ssh = [
            "/usr/bin/ssh", "-i", dir + "/key", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-p", String(port), "\(id)@127.0.0.1",
        ]
        try latency("ssh ID true (a new connection each)", ssh + ["true"], environment: ["HOME": dir])
        try throughput("ssh ID head", ssh + ["head -c 268435456 /dev/zero"], environment: ["HOME": dir])

        // 200 MB into the task: scp through the gateway (SFTP, OpenSSH's default since 9.0) against cat over
        // canopy exec -i, the same file, best of 3 each.
        let big = dir + "/big.bin"
        guard try run(["/bin/sh", "-c", "head -c 209715200 /dev/zero > \(big)"]) == 0 else { throw BenchError("cannot write \(big)") }
        func upload(_ label: String, _ argv: [String], environment: [String: String]) throws -> Double {
            try rate(label, argv, environment: environment, amount: 200, unit: "MB/s", what: "200 MB in")
        }
        let viaExec = try upload(
            "baseline: canopy exec -i ID -- cat >F", ["/bin/sh", "-c", "\(canopy) exec -i \(id) -- sh -c 'cat > up-exec.bin' < \(big)"], environment: env)
        let viaSCP = try upload(
            "scp FILE ID@host: (SFTP)",
            ["/usr/bin/scp", "-i", dir + "/key", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o",
             "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-P", String(port), big, "\(id)@127.0.0.1:up-scp.bin"],
            environment: ["HOME": dir])
        say(
            String(
                format: "exec      scp: %.0f%% of cat over canopy exec (target >= 50%%: %@), %.0f MB/s (target >= 100 MB/s: %@)", viaSCP / viaExec * 100,
                verdict(viaSCP >= viaExec / 2), viaSCP, verdict(viaSCP >= 100)))
        say(String(format: "exec      server CPU %.1f s, RSS %.0f MiB", server.cpuSeconds(), server.memory().rss))
    }

    /// Runs a program with its output to /dev/null; its exit status.
    static func run(_ argv: [String], env extra: [String: String] = [:]) throws -> Int32 {
        try runProgram(argv, env: extra, capture: false).status
    }

    /// Runs a program to its end with the bench's environment plus `extra`, its standard error and input closed;
    /// its exit status and, with `capture`, what it printed (otherwise its output goes to /dev/null).
    static func runProgram(_ argv: [String], env extra: [String: String], capture: Bool) throws -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: argv[0])
        p.arguments = Array(argv.dropFirst())
        var env = ProcessInfo.processInfo.environment
        for (k, v) in extra { env[k] = v }
        p.environment = env
        let out = Pipe()
        p.standardOutput = capture ? out : FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let data = capture ? out.fileHandleForReading.readDataToEndOfFile() : Data()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}

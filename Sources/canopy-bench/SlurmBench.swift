import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The Slurm executor against a real cluster (`scripts/slurm-cluster.sh up`, SLURM_CONF exported): submissions
/// through Canopy into Slurm next to raw `sbatch` in a loop, and the CPU one status refresh costs Canopy with many
/// jobs known. Jobs go to the cluster's `parked` partition, which is DOWN: they queue and never run, so neither side
/// pays for jobs running beside the measurement; they are cancelled afterwards.
enum SlurmBench {
    static func run(submissions count: Int, known: Int) throws {
        guard let conf = ProcessInfo.processInfo.environment["SLURM_CONF"], FileManager.default.fileExists(atPath: conf) else {
            say("slurm     skipped: start a cluster (scripts/slurm-cluster.sh up DIR) and export SLURM_CONF=DIR/slurm.conf")
            return
        }
        defer { _ = try? shell(["scancel", "-p", "parked"]) }
        _ = try shell(["scancel", "-p", "parked"])

        // Baseline: raw sbatch, one after the other, as a script would.
        let t0 = monotonicNow()
        for i in 0..<count {
            let out = try shell(["sbatch", "--parsable", "-p", "parked", "--job-name=raw\(i)", "--wrap", "true"])
            guard !out.isEmpty else { throw BenchError("sbatch printed no job id") }
        }
        let rawRate = Double(count) / (monotonicNow() - t0)
        say(String(format: "baseline  raw sbatch in a loop (%d jobs)                %8.1f /s", count, rawRate))
        _ = try shell(["scancel", "-p", "parked"])
        // And eight such loops at once: Canopy submits up to eight workloads at a time.
        let t1 = monotonicNow()
        onThreads(8) { k in
            var i = k
            while i < count {
                _ = try? shell(["sbatch", "--parsable", "-p", "parked", "--job-name=raw\(i)", "--wrap", "true"])
                i += 8
            }
        }
        let parallelRate = Double(count) / (monotonicNow() - t1)
        say(String(format: "baseline  raw sbatch, 8 loops at once                   %8.1f /s", parallelRate))
        _ = try shell(["scancel", "-p", "parked"])

        let server = try ServerUnderTest(dataDir: try temporaryDirectory("slurm"), extra: ["--executor", "slurm", "--slurm-poll-interval", "1"])
        defer { server.stop() }
        let setup = try server.client()
        let q = try setup.request("POST", "/api/v1/queues", body: #"{"name": "parked", "pool": "parked"}"#)
        guard q.status == 201 || q.status == 200 else { throw BenchError("queue: \(q.status) \(q.text)") }
        let body = #"{"command": ["true"], "queue": "parked", "resources": {"cpu": 1, "memory": "64Mi"}}"#

        // Through Canopy: HTTP submissions from 4 clients; done when Slurm holds every job.
        let start = monotonicNow()
        submit(server, count: count, body: body)
        try waitForJobs(count, since: start, timeout: 300)
        let rate = Double(count) / (monotonicNow() - start)
        say(
            String(
                format: "slurm     submissions through Canopy into Slurm        %8.1f /s   (%.0f%% of the raw loop, %.0f%% of 8 loops)  target >= 80%%: %@",
                rate, rate / rawRate * 100, rate / parallelRate * 100, verdict(rate >= 0.8 * rawRate)))

        // Status refresh: Canopy follows `known` jobs; its CPU over several one-second polls, per poll.
        if known > count {
            submit(server, count: known - count, body: body)
            try waitForJobs(known, since: start, timeout: 1800)
        }
        Thread.sleep(forTimeInterval: 3)
        let polls = 10.0
        let cpu0 = server.cpuSeconds()
        let w0 = monotonicNow()
        Thread.sleep(forTimeInterval: polls)
        let perPoll = (server.cpuSeconds() - cpu0) / ((monotonicNow() - w0) / 1.0)
        let squeueTime = try timed { _ = try shell(["squeue", "-h", "-a", "-t", "all", "-o", "%i|%T|%r|%N|%S|%e|%k"]) }
        say(
            String(
                format: "slurm     status refresh with %d jobs known            %8.3f s CPU per refresh (squeue itself: %.3f s wall)  target <= 1 s: %@",
                max(known, count), perPoll, squeueTime, verdict(perPoll <= 1)))
    }

    private static func submit(_ server: ServerUnderTest, count: Int, body: String) {
        let clients = 4
        onThreads(clients) { k in
            guard let c = try? server.client() else { return }
            var i = k
            while i < count {
                _ = try? c.request("POST", "/api/v1/workloads", body: body)
                i += clients
            }
        }
    }

    /// Waits until the parked partition holds `n` Canopy jobs.
    private static func waitForJobs(_ n: Int, since: Double, timeout: Double) throws {
        while monotonicNow() - since < timeout {
            let out = try shell(["squeue", "-h", "-p", "parked", "-o", "%k"])
            if out.split(separator: "\n").filter({ $0.hasPrefix("canopy:") }).count >= n { return }
            usleep(20_000)
        }
        throw BenchError("Slurm did not get \(n) jobs from Canopy within \(Int(timeout)) s")
    }

    private static func timed(_ body: () throws -> Void) rethrows -> Double {
        let t = monotonicNow()
        try body()
        return monotonicNow() - t
    }

    /// Runs a command (found on PATH) and returns its standard output; throws on failure.
    @discardableResult
    static func shell(_ argv: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = argv
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw BenchError("\(argv.joined(separator: " ")) exited with \(p.terminationStatus)") }
        return String(decoding: data, as: UTF8.self)
    }
}

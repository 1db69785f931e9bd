import CanopyCore
import CanopyTesting
import Foundation
import Testing

/// Interactive workloads through the CLI against a real `canopy serve`.
@Suite("interactive workloads through the CLI, live", .serialized)
struct InteractiveCLILiveTests {
    @Test("run --interactive, lease +1h, stop to Stopped, restart with the same files, a queue's cap refusing unlimited")
    func cli() async throws {
        try await ServerProcess.with(dataDir: try makeTempDir("canopy-icli"), removeAfter: true) { server in
            let queue = try await server.cli(["queues", "create", "dev", "--default-lease", "1h", "--max-lease", "4h"])
            #expect(queue.status == 0, "\(queue)")
            let ls = try await server.cli(["queues", "ls"])
            #expect(ls.stdout.contains("dev") && ls.stdout.contains("4h"), "\(ls)")
            let refused = try await server.cli(["run", "--interactive", "--queue", "dev", "--lease", "unlimited", "--", "true"])
            #expect(refused.status != 0 && refused.stderr.contains("at most 4h"), "\(refused)")
            let notInteractive = try await server.cli(["run", "--lease", "1h", "--", "true"])
            #expect(notInteractive.status != 0 && notInteractive.stderr.contains("--interactive"), "\(notInteractive)")

            let run = try await server.cli(["run", "-d", "--interactive", "--queue", "dev", "--", "sh", "-c", "echo run >> runs.txt; sleep 300"])
            #expect(run.status == 0, "\(run)")
            let id = run.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(try await eventually(timeout: .seconds(20)) { try await server.phase(id) == "Running" })
            let lease = try await server.cli(["lease", id, "+1h"])
            #expect(lease.status == 0 && lease.stdout.contains("lease ends"), "\(lease)")
            let show = try await server.cli(["show", id])
            #expect(show.stdout.contains("Lease") && show.stdout.contains("1h, ends"), "\(show)")
            let tooFar = try await server.cli(["lease", id, "+5h"])
            #expect(tooFar.status != 0 && tooFar.stderr.contains("at most 4h"), "\(tooFar)")

            #expect(try await server.cli(["stop", id]).status == 0)
            #expect(try await eventually(timeout: .seconds(20)) { try await server.phase(id) == "Stopped" })
            let restart = try await server.cli(["restart", id])
            #expect(restart.status == 0, "\(restart)")
            #expect(try await eventually(timeout: .seconds(20)) { try await server.phase(id) == "Running" })
            let runs = server.dataDir + "/workloads/\(id)/task-0/work/runs.txt"
            #expect(try await eventually(timeout: .seconds(20)) { ((try? String(contentsOfFile: runs, encoding: .utf8)) ?? "") == "run\nrun\n" })
            #expect(try await server.cli(["show", id]).stdout.contains("Restarts"))
            _ = try await server.cli(["stop", id])
        }
    }

    @Test("idle stop: a quiet instance is warned, then stopped with IdleTimeout; one using CPU, one used through the proxy and one whose probe command succeeds stay up")
    func idleStop() async throws {
        try await ServerProcess.with(dataDir: try makeTempDir("canopy-idle"), removeAfter: true) { server in
            #expect(try await server.cli(["queues", "create", "quiet", "--idle-timeout", "10s"]).status == 0)
            #expect(try await server.cli(["queues", "ls"]).stdout.contains("10s"))
            func submit(_ args: [String]) async throws -> String {
                let r = try await server.cli(["run", "-d", "--interactive", "--queue", "quiet", "--cpus", "0.5", "--memory", "128Mi"] + args)
                #expect(r.status == 0, "\(r)")
                return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            }
            let quiet = try await submit(["--", "sleep", "300"])
            let busy = try await submit(["--", "sh", "-c", "while :; do :; done"])
            let port = ProxyLiveTests.freePort()
            let served = try await submit(["--port", String(port), "--", "python3", "-m", "http.server", String(port), "--bind", "127.0.0.1"])
            // Quiet by every measure, but its probe command says it is in use.
            let probed = try await submit(["--idle-probe", "test -e in-use", "--", "sh", "-c", "touch in-use; exec sleep 300"])
            let batchProbe = try await server.cli(["run", "-d", "--idle-probe", "true", "--", "true"])
            #expect(batchProbe.status != 0 && batchProbe.stderr.contains("interactive"), "\(batchProbe)")
            for id in [quiet, busy, served, probed] { #expect(try await eventually(timeout: .seconds(20)) { try await server.phase(id) == "Running" }) }
            let url = String((try await server.cli(["open", served])).stdout.split(separator: "?").first ?? "")
            // 16 seconds of use of one of them, through the proxy.
            let until = Date().addingTimeInterval(16)
            while Date() < until {
                _ = try await ProxyLiveTests.call("get", url, ["Authorization=Bearer \(server.token)"])
                try await Task.sleep(for: .seconds(2))
            }
            func json(_ id: String) async throws -> [String: Any] {
                let show = try await server.cli(["show", id, "-o", "json"])
                return (try? JSONSerialization.jsonObject(with: Data(show.stdout.utf8))) as? [String: Any] ?? [:]
            }
            #expect(try await eventually(timeout: .seconds(10)) { try await server.phase(quiet) == "Stopped" })
            let stopped = try await json(quiet)
            #expect((stopped["reason"] as? [String: Any])?["code"] as? String == "IdleTimeout", "\(stopped["reason"] ?? "")")
            let log = try await server.cli(["logs", quiet])
            #expect(log.stdout.contains("will be stopped at"), "the warning reached the task's log: \(log)")
            let idleFile = server.dataDir + "/workloads/\(quiet)/task-0/work/.canopy/idle"
            #expect(((try? String(contentsOfFile: idleFile, encoding: .utf8)) ?? "").contains("stops-at="))
            let cpu = try await json(busy)
            #expect(cpu["phase"] as? String == "Running" && cpu["lastActivitySource"] as? String == "cpu", "\(cpu["lastActivitySource"] ?? "")")
            let used = try await json(served)
            #expect(used["phase"] as? String == "Running" && used["lastActivitySource"] as? String == "proxy", "\(used["lastActivitySource"] ?? "")")
            #expect(try await server.cli(["show", busy]).stdout.contains("Last activity"))
            let asked = try await json(probed)
            #expect(asked["phase"] as? String == "Running" && asked["lastActivitySource"] as? String == "probe", "\(asked["lastActivitySource"] ?? "")")
            _ = try await server.cli(["stop", busy, served, probed])
        }
    }

    @Test("canopy rm deletes a stopped or finished workload and its files, never through a task's links; a running one is a 409; others' are 403/404")
    func remove() async throws {
        try await ServerProcess.with(dataDir: try makeTempDir("canopy-rm"), removeAfter: true) { server in
            let outside = try makeTempDir("canopy-rm-outside")
            FileManager.default.createFile(atPath: outside + "/keep", contents: Data("keep".utf8))
            chmod(outside, 0o777)
            // The task leaves a link to a directory outside, and a file through nothing.
            let done = try await server.cli(["run", "--", "sh", "-c", "ln -s \(outside) escape; mkdir -p a/b/c; echo x > a/b/c/f"])
            #expect(done.status == 0, "\(done)")
            let all = (try? JSONSerialization.jsonObject(with: Data(try await server.cli(["ps", "--all", "-o", "json"]).stdout.utf8))) as? [[String: Any]]
            let finished = try #require(all?.first?["id"] as? String)
            let dir = server.dataDir + "/workloads/\(finished)"
            #expect(FileManager.default.fileExists(atPath: dir + "/task-0/work/a/b/c/f"), "\(finished)")
            let other = try await server.cli(["tokens", "create", "--user", "mallory", "--tenant", "evil"])
            let otherToken = other.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.first { $0.hasPrefix("cnp_") } ?? ""
            let foreign = try await runProcess(buildProductsDir + "/canopy", ["rm", finished], env: ["CANOPY_URL": server.url, "CANOPY_TOKEN": otherToken])
            #expect(foreign.status != 0 && foreign.stderr.contains("404"), "\(foreign)")
            let rm = try await server.cli(["rm", finished])
            #expect(rm.status == 0, "\(rm)")
            #expect(!FileManager.default.fileExists(atPath: dir))
            #expect((try? String(contentsOfFile: outside + "/keep", encoding: .utf8)) == "keep", "the link was not followed")
            #expect(try await server.cli(["show", finished]).status != 0)
            #expect(try await server.cli(["rm", finished]).status != 0, "gone")

            let live = try await server.cli(["run", "-d", "--interactive", "--", "sleep", "300"])
            let id = live.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(try await eventually(timeout: .seconds(20)) { try await server.phase(id) == "Running" })
            let refused = try await server.cli(["rm", id])
            #expect(refused.status != 0 && refused.stderr.contains("409") && refused.stderr.contains("stop it first"), "\(refused)")
            #expect(try await server.cli(["stop", id]).status == 0)
            #expect(try await eventually(timeout: .seconds(20)) { try await server.phase(id) == "Stopped" })
            #expect(try await server.cli(["rm", id]).status == 0)
            #expect(!FileManager.default.fileExists(atPath: server.dataDir + "/workloads/\(id)"))
            #expect(try await server.cli(["restart", id]).status != 0)
            try? FileManager.default.removeItem(atPath: outside)
        }
    }
}

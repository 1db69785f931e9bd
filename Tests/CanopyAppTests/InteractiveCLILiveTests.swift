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
}

import CanopyApp
import CanopyCore
import CanopyHost
import CanopyLocal
import CanopyTesting
import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

@testable import CanopySlurm

/// The Slurm cluster `scripts/test.sh` starts with `scripts/slurm-cluster.sh` (three nodes with two fake GPUs each,
/// partitions `debug` and `one`); these tests run only where it exported CANOPY_TEST_SLURM_DIR.
enum Cluster {
    static let dir = ProcessInfo.processInfo.environment["CANOPY_TEST_SLURM_DIR"]
    static var conf: String { (dir ?? "") + "/slurm.conf" }
    static var available: Bool { dir != nil }
    /// Set by scripts/test.sh when it started the cluster: then a missing cluster fails the run instead of skipping.
    static let required = ProcessInfo.processInfo.environment["CANOPY_REQUIRE_SLURM"] == "1"
    /// How long the tests wait for a workload: Slurm starts and ends jobs within seconds, polled every 0.3 s.
    static let timeout: Duration = .seconds(60)

    /// Runs a Slurm command against the test cluster.
    static func run(_ args: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
        try await runProcess(TaskUser.findProgram(args[0], path: "/usr/bin:/bin:/usr/sbin") ?? args[0], Array(args.dropFirst()), env: ["SLURM_CONF": conf])
    }

    /// How many jobs carry a workload's tag, in any state.
    static func jobsTagged(_ workloadID: String) async throws -> [String] {
        let out = try await run(["squeue", "-h", "-a", "-t", "all", "-o", "%i|%k"]).stdout
        return out.split(separator: "\n").filter { $0.hasSuffix("|canopy:\(workloadID)") }.map { String($0.split(separator: "|")[0]) }
    }

    static func configuration(dataDir: String? = nil) throws -> ServerConfiguration {
        var c = try testConfiguration(dataDir: dataDir)
        c.executor = "slurm"
        c.slurmConf = conf
        c.slurmPollInterval = 0.3
        return c
    }
}

extension TestClientProtocol {
    func submit(_ body: [String: Any], token: String) async throws -> String {
        let (status, w) = try await json("/api/v1/workloads", .post, token: token, body: body)
        #expect(status == .created, "\(w)")
        return try #require(w["id"] as? String)
    }
}

func reason(_ w: [String: Any]) -> String? { (w["reason"] as? [String: Any])?["code"] as? String }

func withSlurmServer(dataDir: String? = nil, _ test: @Sendable @escaping (CanopyServer, any TestClientProtocol) async throws -> Void) async throws {
    try await withServer(try Cluster.configuration(dataDir: dataDir), test)
}

@Suite("the Slurm cluster the suite depends on")
struct SlurmClusterPresence {
    @Test("is there and answers whenever the run requires it (CI as root): never a silent skip", .enabled(if: Cluster.required))
    func present() async throws {
        try #require(Cluster.available, "CANOPY_REQUIRE_SLURM=1 but CANOPY_TEST_SLURM_DIR is not set: the Slurm suite would be skipped")
        let sinfo = try await Cluster.run(["sinfo", "-h", "-N", "-o", "%N %T"])
        #expect(sinfo.status == 0 && sinfo.stdout.contains("n1"), "sinfo: \(sinfo.stdout) \(sinfo.stderr)")
    }
}

// One cluster for all: the suite runs its tests one at a time (the fault test stops slurmctld).
@Suite("Slurm executor on a real cluster", .serialized, .enabled(if: Cluster.available, "needs the cluster scripts/test.sh starts"))
struct SlurmClusterTests {
    @Test("inventory: partitions become pools, nodes carry CPUs, memory and GRES GPUs, and allocations show while a job runs")
    func inventory() async throws {
        try await withSlurmServer { server, client in
            let (status, body) = try await client.json("/api/v1/nodes", token: server.adminToken)
            #expect(status == .ok)
            let views = try #require(body["items"] as? [[String: Any]], "\(body)")
            let nodes = views.compactMap { $0["node"] as? [String: Any] }
            #expect(Set(nodes.compactMap { $0["name"] as? String }) == ["n1", "n2", "n3"])
            #expect(nodes.count == 7)  // a node is listed once per partition it is in
            let pools = Set(nodes.compactMap { $0["pool"] as? String })
            #expect(pools == ["debug", "one", "parked"], "\(nodes)")
            let n2 = try #require(nodes.first { $0["name"] as? String == "n2" })
            #expect(n2["state"] as? String == "Ready")
            #expect((n2["gpus"] as? [[String: Any]])?.count == 2)
            #expect((n2["gpus"] as? [[String: Any]])?.first?["model"] as? String == "fake")

            let (bad, error) = try await client.json("/api/v1/queues", .post, token: server.adminToken, body: ["name": "nowhere", "pool": "nope"])
            #expect(bad == .badRequest && (error["error"] as? [String: Any])?["field"] as? String == "pool", "\(error)")
            // A queue on the `one` partition runs only on n1; its GPUs show as allocated there while it runs.
            let (qs, _) = try await client.json("/api/v1/queues", .post, token: server.adminToken, body: ["name": "onlyone", "pool": "one"])
            #expect(qs == .created || qs == .ok)
            let id = try await client.submit(
                ["command": ["sleep", "30"], "queue": "onlyone", "resources": ["gpus": 2, "gpuModel": "fake"]], token: server.adminToken)
            let running = try await client.waitForPhase(id, token: server.adminToken, ["Running"], timeout: Cluster.timeout)
            #expect((running["tasks"] as? [[String: Any]])?.first?["node"] as? String == "n1")
            let busy = await eventually(timeout: .seconds(15)) {
                let views = await server.controller.nodeViews()
                return views.contains { $0.node.name == "n1" && $0.allocatedGPUs == [0, 1] && $0.tasks == 1 }
            }
            #expect(busy)
            _ = try await client.json("/api/v1/workloads/\(id)/stop", .post, token: server.adminToken)
            let stopped = try await client.waitForPhase(id, token: server.adminToken, ["Cancelled"], timeout: Cluster.timeout)
            #expect(reason(stopped) == "StoppedByUser")
            #expect(try await Cluster.jobsTagged(id).count == 1)
        }
    }

    @Test("a gang of three tasks with a GPU each runs as one job across the nodes; per-task logs and exit codes")
    func gang() async throws {
        try await withSlurmServer { server, client in
            // A whole node's CPUs per task, whatever this host has: one task per node, so Slurm's block layout says
            // which went where.
            let (_, body) = try await client.json("/api/v1/nodes", token: server.adminToken)
            let nodes = (body["items"] as? [[String: Any]] ?? []).compactMap { $0["node"] as? [String: Any] }
            let nodeCPUs = try #require(nodes.first { $0["name"] as? String == "n1" }?["cpuMillis"] as? Int, "\(body)") / 1000
            let id = try await client.submit(
                [
                    "command": ["sh", "-c", "echo task $CANOPY_TASK_INDEX of $CANOPY_TASK_COUNT gpus=$CUDA_VISIBLE_DEVICES; echo err >&2"],
                    "tasks": 3, "resources": ["cpu": nodeCPUs, "memory": "256Mi", "gpus": 1, "gpuModel": "fake"],
                ], token: server.adminToken)
            let done = try await client.waitForPhase(id, token: server.adminToken, ["Succeeded", "Failed"], timeout: Cluster.timeout)
            #expect(done["phase"] as? String == "Succeeded", "\(done)")
            #expect(done["exitCode"] as? Int == 0)
            let tasks = try #require(done["tasks"] as? [[String: Any]])
            #expect(Set(tasks.compactMap { $0["node"] as? String }) == ["n1", "n2", "n3"])
            #expect(Set(tasks.compactMap { $0["backendID"] as? String }).count == 1)
            let jobs = try await Cluster.jobsTagged(id)
            #expect(jobs.count == 1)
            for i in 0..<3 {
                try await client.execute(uri: "/api/v1/workloads/\(id)/tasks/\(i)/logs", method: .get, headers: authHeaders(server.adminToken)) { r in
                    let text = String(buffer: r.body)
                    #expect(text.contains("task \(i) of 3 gpus=0"), "\(text)")
                }
            }
        }
    }

    @Test("exit codes, out of memory, max duration, and a job cancelled in Slurm directly are reported with typed reasons")
    func failures() async throws {
        try await withSlurmServer { server, client in
            let t = server.adminToken
            let exit3 = try await client.submit(["command": ["sh", "-c", "exit 3"]], token: t)
            let oom = try await client.submit(
                ["command": ["python3", "-c", "b = bytearray(400 * 1024 * 1024); import time; time.sleep(5)"], "resources": ["memory": "100Mi"]], token: t)
            let long = try await client.submit(["command": ["sleep", "60"], "maxDuration": "2s"], token: t)
            let victim = try await client.submit(["command": ["sleep", "60"]], token: t)

            let e = try await client.waitForPhase(exit3, token: t, ["Failed", "Succeeded"], timeout: Cluster.timeout)
            #expect(e["exitCode"] as? Int == 3 && reason(e) == "NonZeroExit", "\(e)")
            let o = try await client.waitForPhase(oom, token: t, ["Failed", "Succeeded"], timeout: Cluster.timeout)
            #expect(reason(o) == "OutOfMemory", "\(o)")
            let l = try await client.waitForPhase(long, token: t, ["Failed", "Succeeded", "Cancelled"], timeout: Cluster.timeout)
            #expect(l["phase"] as? String == "Failed" && reason(l) == "MaxDurationExceeded", "\(l)")

            let running = try await client.waitForPhase(victim, token: t, ["Running"], timeout: Cluster.timeout)
            let job = try #require((running["tasks"] as? [[String: Any]])?.first?["backendID"] as? String, "\(running)")
            _ = try await Cluster.run(["scancel", job])
            let v = try await client.waitForPhase(victim, token: t, ["Cancelled", "Failed"], timeout: Cluster.timeout)
            #expect(v["phase"] as? String == "Cancelled" && reason(v) == "CancelledInBackend", "\(v)")
        }
    }

    @Test("a workload waits with Slurm's pending reason while the GPUs are taken, and starts when they free up")
    func pendingReason() async throws {
        try await withSlurmServer { server, client in
            let t = server.adminToken
            let hog = try await client.submit(["command": ["sleep", "60"], "tasks": 3, "resources": ["cpu": 1, "memory": "128Mi", "gpus": 2]], token: t)
            _ = try await client.waitForPhase(hog, token: t, ["Running"], timeout: Cluster.timeout)
            let waiter = try await client.submit(["command": ["true"], "resources": ["cpu": 1, "memory": "128Mi", "gpus": 1]], token: t)
            let waiting = try await client.waitFor(waiter, token: t, timeout: Cluster.timeout) { reason($0) == "InsufficientResources" }
            #expect(waiting["phase"] as? String == "Pending" && reason(waiting) == "InsufficientResources", "\(waiting)")
            #expect(((waiting["reason"] as? [String: Any])?["message"] as? String)?.contains("Resources") == true)
            _ = try await client.json("/api/v1/workloads/\(hog)/stop", .post, token: t)
            let done = try await client.waitForPhase(waiter, token: t, ["Succeeded", "Failed"], timeout: Cluster.timeout)
            #expect(done["phase"] as? String == "Succeeded", "\(done)")
            // Stopping a workload still pending in Slurm takes it out of Slurm's queue.
            let blocked = try await client.submit(["command": ["true"], "resources": ["gpus": 2], "tasks": 3, "maxDuration": "1h"], token: t)
            _ = try await client.waitFor(blocked, token: t, timeout: Cluster.timeout) {
                (($0["tasks"] as? [[String: Any]])?.first?["backendID"] as? String) != nil || $0["phase"] as? String != "Pending"
            }
            _ = try await client.json("/api/v1/workloads/\(blocked)/stop", .post, token: t)
            let gone = await eventually(timeout: .seconds(15)) {
                let out = (try? await Cluster.run(["squeue", "-h", "-a", "-t", "all", "-o", "%T|%k"]).stdout) ?? ""
                return out.split(separator: "\n").contains { $0 == "CANCELLED|canopy:\(blocked)" } || !out.contains("canopy:\(blocked)")
            }
            #expect(gone)
        }
    }

    @Test("submission is idempotent: a second executor, as after a crash before the job id was recorded, adopts the job")
    func idempotentSubmission() async throws {
        let root = try makeTempDir() + "/workloads"
        let env = ["PATH": "/usr/local/bin:/usr/bin:/bin", "SLURM_CONF": Cluster.conf]
        let spec = WorkloadSpec(command: ["sleep", "1"], resources: Resources(cpuMillis: 1000, memoryMiB: 64))
        let submission = WorkloadSubmission(workloadID: "idem\(UInt32.random(in: 0...UInt32.max))", tenant: "t", spec: spec, pool: nil)
        let first = try SlurmExecutor(configuration: .init(workloadsRoot: root, pollInterval: 0.3, environment: env))
        let id1 = try await first.submit(submission)
        let second = try SlurmExecutor(configuration: .init(workloadsRoot: root, pollInterval: 0.3, environment: env))
        let id2 = try await second.submit(submission)
        #expect(id1 == id2)
        #expect(try await Cluster.jobsTagged(submission.workloadID) == [id1])
    }

    @Test("slurmctld down: phases kept with a BackendUnavailable condition, submissions accepted and queued; caught up after")
    func controllerDown() async throws {
        let dir = try #require(Cluster.dir)
        try await withSlurmServer { server, client in
            let t = server.adminToken
            let running = try await client.submit(["command": ["sleep", "8"]], token: t)
            _ = try await client.waitForPhase(running, token: t, ["Running"], timeout: Cluster.timeout)
            // Slurm itself must see the job running (its step started) before its controller goes away.
            #expect(try await eventually(timeout: .seconds(20)) {
                let jobs = try await Cluster.jobsTagged(running)
                guard let job = jobs.first else { return false }
                return (try await Cluster.run(["squeue", "-h", "-j", job, "-o", "%T"])).stdout.contains("RUNNING")
            })
            let pid = try String(contentsOfFile: dir + "/slurmctld.pid", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            kill(pid_t(pid)!, SIGTERM)
            do {
                let down = try await client.waitFor(running, token: t, timeout: .seconds(40)) { w in
                    ((w["conditions"] as? [[String: Any]]) ?? []).contains { $0["code"] as? String == "BackendUnavailable" }
                }
                #expect(down["phase"] as? String == "Running", "\(down)")
                let (status, queued) = try await client.json("/api/v1/workloads", .post, token: t, body: ["command": ["echo", "after"]])
                #expect(status == .created, "\(queued)")
                let late = try #require(queued["id"] as? String)
                let waiting = try await client.waitFor(late, token: t, timeout: .seconds(40)) { reason($0) == "BackendUnavailable" }
                #expect(waiting["phase"] as? String == "Pending", "\(waiting)")
                try await restartController()
                let done = try await client.waitForPhase(late, token: t, ["Succeeded", "Failed"], timeout: .seconds(90))
                #expect(done["phase"] as? String == "Succeeded", "\(done)")
                let first = try await client.waitForPhase(running, token: t, ["Succeeded", "Failed"], timeout: .seconds(90))
                #expect(first["phase"] as? String == "Succeeded", "\(first)")
                #expect((first["conditions"] as? [Any]) == nil)
                #expect(try await Cluster.jobsTagged(late).count == 1)
                #expect(try await Cluster.jobsTagged(running).count == 1)
            } catch {
                try? await restartController()
                throw error
            }
        }
    }

    @Test("a restarted Canopy follows the jobs it submitted and never submits them again")
    func restart() async throws {
        let dataDir = try makeTempDir()
        nonisolated(unsafe) var id = ""
        try await withSlurmServer(dataDir: dataDir) { server, client in
            id = try await client.submit(["command": ["sh", "-c", "sleep 3; echo survived"]], token: server.adminToken)
            _ = try await client.waitForPhase(id, token: server.adminToken, ["Running"], timeout: Cluster.timeout)
        }
        try await withSlurmServer(dataDir: dataDir) { server, client in
            let done = try await client.waitForPhase(id, token: server.adminToken, ["Succeeded", "Failed"], timeout: Cluster.timeout)
            #expect(done["phase"] as? String == "Succeeded", "\(done)")
            #expect(try await Cluster.jobsTagged(id).count == 1)
        }
    }
}

/// Starts slurmctld again (it reads its state back from StateSaveLocation) and waits until it answers.
func restartController() async throws {
    _ = try await runProcess("/usr/sbin/slurmctld", [], env: ["SLURM_CONF": Cluster.conf])
    _ = await eventually(timeout: .seconds(30)) { (try? await Cluster.run(["squeue", "-h"]).status) == 0 }
}

import CanopyApp
import CanopyCore
import CanopyTesting
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The dockerd `scripts/test.sh` starts beside the cluster: it holds the image catalog, and the nodes run images from
/// root file systems exported from it.
private enum Engine {
    static let dir = ProcessInfo.processInfo.environment["CANOPY_TEST_DOCKER_DIR"]
    static var available: Bool { dir.map { FileManager.default.fileExists(atPath: $0 + "/docker.sock") } ?? false }
}

// In the cluster's suite (serialized: its fault test stops slurmctld).
extension SlurmClusterTests {
    @Test(
        "images on Slurm: tasks run in the image's file system (read-only, /workspace, the job's user, a host mount), exit codes, a gang, stop with grace",
        .enabled(if: Engine.available, "needs the dockerd scripts/test.sh starts"))
    func imagesOnSlurm() async throws {
        let shared = try makeTempDir("canopy-slurm-mount")
        chmod(shared, 0o755)
        try "from the host\n".write(toFile: shared + "/hello.txt", atomically: true, encoding: .utf8)
        chmod(shared + "/hello.txt", 0o644)
        var config = try Cluster.configuration()
        config.containerEngine = "unix://\(Engine.dir!)/docker.sock"
        config.imagePolicy = "engine"
        config.hostMounts = [shared]
        let dataDir = config.absoluteDataDir
        try await withServer(config) { server, client in
            let t = server.adminToken
            let admin = Principal(user: "admin", tenant: "default", role: .admin)
            _ = try await server.images.importRootfs(file: Engine.dir! + "/busybox-rootfs.tar", name: "busybox:1.36", public: true, as: admin)

            let script = """
                echo "uid=$(id -u) pwd=$(pwd) home=$HOME path=$PATH greeting=$GREETING task=$CANOPY_TASK_INDEX"
                cat /data/hello.txt
                cat /workspace/in/hello.txt
                touch /bin/planted 2>/dev/null && echo root-writable || echo root-read-only
                touch /data/planted 2>/dev/null && echo mount-writable || echo mount-read-only
                [ -e /etc/debian_version ] && echo host-visible || echo host-hidden
                echo out > result.txt
                """
            let id = try await client.submit(
                [
                    "image": "busybox:1.36", "command": ["sh", "-c", script], "tasks": 2, "env": ["GREETING": "hi"],
                    "mounts": [
                        ["source": "host:" + shared, "target": "/data", "readOnly": true],
                        ["source": "host:" + shared, "target": "/workspace/in", "readOnly": true],
                    ], "resources": ["cpu": 1, "memory": "256Mi"],
                ], token: t)
            let done = try await client.waitForPhase(id, token: t, ["Succeeded", "Failed"], timeout: Cluster.timeout)
            #expect(done["phase"] as? String == "Succeeded", "\(done)")
            for i in 0..<2 {
                let task = dataDir + "/workloads/\(id)/task-\(i)"
                let out = (try? String(contentsOfFile: task + "/stdout.log", encoding: .utf8)) ?? ""
                let err = (try? String(contentsOfFile: task + "/stderr.log", encoding: .utf8)) ?? ""
                let uid = geteuid() == 0 ? "65534" : String(geteuid())
                #expect(
                    out.contains(
                        "uid=\(uid) pwd=/workspace home=/workspace path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin greeting=hi task=\(i)"),
                    "task \(i): \(out) \(err)")
                #expect(out.components(separatedBy: "from the host").count == 3, "both mounts, /workspace/in not hidden by /workspace: \(out) \(err)")
                #expect(out.contains("root-read-only") && out.contains("mount-read-only") && out.contains("host-hidden"), "\(out)")
                #expect(FileManager.default.fileExists(atPath: task + "/work/result.txt"), "the task's /workspace is its work directory")
            }
            #expect(!FileManager.default.fileExists(atPath: shared + "/planted"))
            // One export for the image, shared by every task and workload of it.
            let exported = try FileManager.default.contentsOfDirectory(atPath: dataDir + "/images/fs")
            #expect(exported.count == 1, "\(exported)")

            let failing = try await client.submit(["image": "busybox:1.36", "command": ["sh", "-c", "exit 3"]], token: t)
            let f = try await client.waitForPhase(failing, token: t, ["Succeeded", "Failed"], timeout: Cluster.timeout)
            #expect(f["exitCode"] as? Int == 3 && reason(f) == "NonZeroExit", "\(f)")

            // A target inside the image's read-only tree that the image lacks cannot be made: the workload fails
            // with why, before its job is submitted.
            let badTarget = try await client.submit(
                ["image": "busybox:1.36", "command": ["true"], "mounts": [["source": "host:" + shared, "target": "/home/data"]]], token: t)
            let bt = try await client.waitForPhase(badTarget, token: t, ["Succeeded", "Failed"], timeout: Cluster.timeout)
            #expect(reason(bt) == "LaunchFailed" && "\(bt)".contains("/home/data cannot be mounted"), "\(bt)")
            #expect(try await Cluster.jobsTagged(badTarget).isEmpty)

            // A data: mount cannot reach the nodes: refused at submit, naming the field.
            let (status, refused) = try await client.json(
                "/api/v1/workloads", .post, token: t,
                body: ["image": "busybox:1.36", "command": ["true"], "mounts": [["source": "data:/x", "target": "/x"]]])
            #expect(status == .badRequest, "\(refused)")
            #expect("\(refused)".contains("mounts[0].source") && "\(refused)".contains("data store"), "\(refused)")

            // A stop: the task's SIGTERM handler runs inside the sandbox within the grace period (a single task, in
            // the batch step; a gang's srun step is cancelled by Slurm on SIGTERM, see SlurmExecutor.stop).
            for tasks in [1] {
                let trapping = try await client.submit(
                    [
                        "image": "busybox:1.36", "tasks": tasks, "resources": ["cpu": 1, "memory": "256Mi"],
                        "command": ["sh", "-c", "trap 'echo got TERM; exit 7' TERM; echo ready; while true; do sleep 0.1; done"],
                    ], token: t)
                _ = try await client.waitForPhase(trapping, token: t, ["Running"], timeout: Cluster.timeout)
                let logs = (0..<tasks).map { dataDir + "/workloads/\(trapping)/task-\($0)/stdout.log" }
                #expect(
                    try await eventually(timeout: .seconds(20)) {
                        logs.allSatisfy { ((try? String(contentsOfFile: $0, encoding: .utf8)) ?? "").contains("ready") }
                    })
                let (stopStatus, _) = try await client.json("/api/v1/workloads/\(trapping)/stop", .post, token: t)
                #expect(stopStatus == .ok || stopStatus == .accepted)
                let s = try await client.waitForPhase(trapping, token: t, ["Cancelled", "Failed", "Succeeded"], timeout: Cluster.timeout)
                #expect(s["phase"] as? String == "Cancelled" && s["exitCode"] as? Int == 143, "\(s)")
                for log in logs {
                    let stopped = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                    #expect(stopped.contains("got TERM"), "\(tasks) tasks: \(log): \(stopped)")
                }
            }
        }
        try? FileManager.default.removeItem(atPath: shared)
    }
}

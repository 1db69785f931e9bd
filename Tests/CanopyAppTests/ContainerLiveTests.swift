import CanopyCore
import CanopyTesting
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The dockerd `scripts/test.sh` starts (`scripts/dockerd.sh`), with its test image's root file system and archive.
private enum LiveEngine {
    static let dir = ProcessInfo.processInfo.environment["CANOPY_TEST_DOCKER_DIR"]
    static var available: Bool { dir.map { FileManager.default.fileExists(atPath: $0 + "/docker.sock") } ?? false }
    static var flags: [String] { ["--container-engine", "unix://\(dir!)/docker.sock"] }

    /// The engine's containers of one workload.
    static func containers(of workload: String) async throws -> Int {
        let r = try await runProcess(
            "/usr/bin/curl",
            [
                "-sf", "--unix-socket", dir! + "/docker.sock",
                "http://x/v1.41/containers/json?all=1&filters=%7B%22label%22%3A%5B%22canopy.workload%3D\(workload)%22%5D%7D",
            ])
        return ((try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8))) as? [Any])?.count ?? -1
    }
}

@Suite(
    "containers through canopy serve, the CLI and the API, on a real dockerd", .serialized,
    .enabled(if: LiveEngine.available, "needs the dockerd scripts/test.sh starts"))
struct ContainerLiveTests {
    @Test("an admin imports an image; a user runs from it, sees its output and exit code; an unknown image is refused with how to add it")
    func runFromImage() async throws {
        try await ServerProcess.with(dataDir: try makeTempDir("canopy-ctr-live"), removeAfter: true, extra: LiveEngine.flags, imagePolicy: "engine") { server in
            let imported = try await server.cli(["images", "import", LiveEngine.dir! + "/busybox-rootfs.tar", "--name", "busybox:1.36", "--public"])
            #expect(imported.status == 0, "\(imported)")
            let loaded = try await server.cli(["images", "load", LiveEngine.dir! + "/busybox-image.tar", "--name", "tensorflow:r2.3.1-py3", "--public"])
            #expect(loaded.status == 0, "\(loaded)")
            let ls = try await server.cli(["images", "ls"])
            #expect(ls.stdout.contains("busybox:1.36") && ls.stdout.contains("tensorflow:r2.3.1-py3"), "\(ls)")

            let run = try await server.cli(["run", "--image", "busybox:1.36", "--", "sh", "-c", "echo hello from $(id -u) in $(pwd)"])
            #expect(run.status == 0, "\(run)")
            #expect(run.stdout.hasPrefix("hello from ") && run.stdout.hasSuffix(" in /workspace\n"), "\(run)")
            if geteuid() == 0 { #expect(!run.stdout.hasPrefix("hello from 0 "), "tasks never run as root in their container unless the queue allows it") }

            let failing = try await server.cli(["run", "--image", "tensorflow:r2.3.1-py3", "--", "sh", "-c", "echo bad >&2; exit 3"])
            #expect(failing.status == 3, "\(failing)")
            #expect(failing.stderr.contains("bad"), "\(failing)")

            let unknown = try await server.cli(["run", "--image", "pytorch:2.1", "--", "true"])
            #expect(unknown.status != 0)
            #expect(unknown.stderr.contains("pytorch:2.1") && unknown.stderr.contains("canopy images import"), "\(unknown)")

            // A process workload still runs beside the containers.
            let process = try await server.cli(["run", "--", "sh", "-c", "echo process"])
            #expect(process.status == 0 && process.stdout == "process\n", "\(process)")
        }
    }

    @Test("a data-store path mounted read-only at /data; the working directory's outputs staged out as with processes")
    func mountsAndStaging() async throws {
        try await ServerProcess.with(dataDir: try makeTempDir("canopy-ctr-live"), removeAfter: true, extra: LiveEngine.flags, imagePolicy: "engine") { server in
            #expect(try await server.cli(["images", "import", LiveEngine.dir! + "/busybox-rootfs.tar", "--name", "busybox:1.36", "--public"]).status == 0)
            let local = try makeTempDir("canopy-ds") + "/mnist.txt"
            try "digits\n".write(toFile: local, atomically: true, encoding: .utf8)
            #expect(try await server.cli(["data", "put", local, "/datasets/mnist/train.txt"]).status == 0)
            let run = try await server.cli([
                "run", "--image", "busybox:1.36", "--mount", "data:/datasets/mnist:/data:ro", "--", "sh", "-c",
                "cat /data/train.txt; touch /data/x 2>/dev/null && echo writable || echo read-only",
            ])
            #expect(run.status == 0 && run.stdout == "digits\nread-only\n", "\(run)")
            let badMount = try await server.cli(["run", "--image", "busybox:1.36", "--mount", "data:/datasets/mnist:/etc", "--", "true"])
            #expect(badMount.status != 0 && badMount.stderr.contains("mounts[0].target"), "\(badMount)")
        }
    }

    @Test("kill -9 of the server while a container runs: the restarted server re-adopts it, one container only, and the logs stay")
    func readoptAfterKill9() async throws {
        let dataDir = try makeTempDir("canopy-ctr-live")
        let server = try await ServerProcess.start(dataDir: dataDir, extra: LiveEngine.flags, imagePolicy: "engine")
        #expect(try await server.cli(["images", "import", LiveEngine.dir! + "/busybox-rootfs.tar", "--name", "busybox:1.36", "--public"]).status == 0)
        let submitted = try await server.cli(["run", "--detach", "--image", "busybox:1.36", "--", "sh", "-c", "echo started; sleep 8; echo finished; exit 5"])
        let id = submitted.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(submitted.status == 0 && !id.isEmpty, "\(submitted)")
        // Killed while the container runs: its first line is out, its last is 8 s away (a loaded CI machine can take
        // seconds to start a container, and seconds between two polls).
        #expect(await eventually(timeout: .seconds(30)) { (try? await server.cli(["logs", id]).stdout)?.hasPrefix("started\n") == true })
        await server.kill9()

        let again = try await ServerProcess.start(dataDir: dataDir, extra: LiveEngine.flags, imagePolicy: "engine")
        defer { Task { await again.terminate() } }
        #expect(
            await eventually(timeout: .seconds(30)) {
                let shown = try? await again.cli(["show", id, "-o", "json"])
                return (try? JSONSerialization.jsonObject(with: Data((shown?.stdout ?? "").utf8)) as? [String: Any])?["phase"] as? String == "Failed"
            })
        let logs = try await again.cli(["logs", id])
        #expect(logs.stdout == "started\nfinished\n", "\(logs)")
        #expect(try await LiveEngine.containers(of: id) == 0, "finished containers are removed")
        let shown = try await again.cli(["show", id, "-o", "json"])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(shown.stdout.utf8)) as? [String: Any])
        let tasks = try #require(json["tasks"] as? [[String: Any]])
        #expect(tasks.first?["runtime"] as? String == "container", "\(shown.stdout)")
        #expect(json["exitCode"] as? Int == 5)
        await again.terminate()
    }

    @Test("the Data Forest client's workspace and seed-shaped app run in a container of the catalog's tensorflow:r2.3.1-py3")
    func dataForestInContainers() async throws {
        try await ServerProcess.with(dataDir: try makeTempDir("canopy-df-ctr"), removeAfter: true, extra: LiveEngine.flags, imagePolicy: "engine") { server in
            // The vendor's image name, imported by an admin (here: the busybox test image under that name).
            let loaded = try await server.cli(["images", "load", LiveEngine.dir! + "/busybox-image.tar", "--name", "tensorflow:r2.3.1-py3", "--public"])
            #expect(loaded.status == 0, "\(loaded)")
            let key = try await server.cli(["keys", "create", "-o", "json", "--description", "client.py"])
            let object = try JSONSerialization.jsonObject(with: Data(key.stdout.utf8)) as? [String: Any] ?? [:]
            let access = try #require(object["accessKey"] as? String)
            let secret = try #require(object["secretKey"] as? String)
            let run = try await runProcess("/usr/bin/python3", [DataForestLiveTests.client, server.url, access, secret, server.token, "json"])
            #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
            let ps = try await server.cli(["ps", "--all", "-o", "json"])
            let all = try #require(try JSONSerialization.jsonObject(with: Data(ps.stdout.utf8)) as? [[String: Any]])
            let ran = all.filter { (($0["tasks"] as? [[String: Any]])?.first?["runtime"] as? String) == "container" }
            #expect(!ran.isEmpty, "the apps ran in containers: \(ps.stdout.prefix(400))")
        }
    }

    @Test(
        "an interactive container: its port reached through the proxy inside the container's own network, exec'd into (pipes and a terminal), then stopped and restarted with its files"
    )
    func interactiveContainer() async throws {
        try await ServerProcess.with(dataDir: try makeTempDir("canopy-ctr-proxy"), removeAfter: true, extra: LiveEngine.flags, imagePolicy: "engine") {
            server in
            #expect(try await server.cli(["images", "import", LiveEngine.dir! + "/busybox-rootfs.tar", "--name", "busybox:1.36", "--public"]).status == 0)
            // The server listens on the container's loopback only: nothing of it is on the host's network.
            let script = """
                echo start >> /workspace/starts; d=/workspace/www/proxy/$CANOPY_WORKLOAD_ID/0/8080; mkdir -p $d
                echo hello-from-container > $d/index.html; exec httpd -f -p 127.0.0.1:8080 -h /workspace/www
                """
            let run = try await server.cli(["run", "-d", "--interactive", "--image", "busybox:1.36", "--port", "8080", "--", "sh", "-c", script])
            #expect(run.status == 0, "\(run)")
            let id = run.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            var link: String?
            _ = try await eventually(timeout: .seconds(30)) {
                let open = try await server.cli(["open", id])
                link = open.status == 0 ? open.stdout.trimmingCharacters(in: .whitespacesAndNewlines) : nil
                return link != nil
            }
            let base = String((link ?? "").split(separator: "?").first ?? "")
            #expect(base.hasSuffix("/proxy/\(id)/0/8080/"), "\(String(describing: link))")
            let auth = "Authorization=Bearer \(server.token)"
            #expect(try await eventually(timeout: .seconds(20)) { try await ProxyLiveTests.call("get", base, [auth]).body.contains("hello-from-container") })

            // canopy exec, through the engine's exec: the container's user and directory, stdout and stderr apart,
            // standard input, the exit code; then a terminal.
            let inside = try await server.cli(
                ["exec", "-i", id, "--", "sh", "-c", "id -u; pwd; wc -c; echo oops >&2; exit 5"], stdin: String(repeating: "x", count: 300_000))
            #expect(inside.status == 5, "\(inside)")
            #expect(inside.stdout.contains("/workspace") && inside.stdout.contains("300000") && !inside.stdout.contains("oops"), "\(inside)")
            #expect(inside.stderr.contains("oops"), "\(inside)")
            let tty = try await runProcess(
                "/usr/bin/python3", ExecLiveTests.terminal(id, ["tty; stty size", "stty size; exit 7"]),
                env: ["CANOPY_URL": server.url, "CANOPY_TOKEN": server.token])
            #expect(
                tty.stdout.contains("/dev/pts/") && tty.stdout.contains("33 101") && tty.stdout.contains("50 120") && tty.stdout.contains("EXIT 7"), "\(tty)")

            _ = try await server.cli(["stop", id])
            #expect(try await eventually(timeout: .seconds(30)) { try await server.phase(id) == "Stopped" })
            #expect(try await ProxyLiveTests.call("get", base, [auth]).status == 503)
            #expect(try await server.cli(["restart", id]).status == 0)
            #expect(try await eventually(timeout: .seconds(30)) { try await ProxyLiveTests.call("get", base, [auth]).body.contains("hello-from-container") })
            let starts = server.dataDir + "/workloads/\(id)/task-0/work/starts"
            #expect((try? String(contentsOfFile: starts, encoding: .utf8)) == "start\nstart\n")
            #expect(try await LiveEngine.containers(of: id) == 1, "one container per running task, the stopped one removed")
            _ = try await server.cli(["stop", id])
        }
    }
}

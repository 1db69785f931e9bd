import CanopyCore
import CanopyHost
import CanopyTesting
import Foundation
import Testing

@testable import CanopyDocker

#if canImport(Glibc)
    import Glibc
#endif

/// The engine `scripts/test.sh` starts (`scripts/dockerd.sh up DIR`): a real dockerd with the busybox test image.
enum Engine {
    static let dir = ProcessInfo.processInfo.environment["CANOPY_TEST_DOCKER_DIR"]
    static let required = ProcessInfo.processInfo.environment["CANOPY_REQUIRE_DOCKER"] == "1"
    static var available: Bool { dir.map { FileManager.default.fileExists(atPath: $0 + "/docker.sock") } ?? false }
    static let image = "busybox:canopy-test"

    static func runtime(root: String, network: String? = nil) throws -> ContainerRuntime {
        let identities = geteuid() == 0 ? try TaskIdentities() : nil
        return ContainerRuntime(
            engine: DockerEngine(socketPath: dir! + "/docker.sock"), configuration: .init(workloadsRoot: root, network: network), identities: identities)
    }

    static func launch(
        _ id: String, _ command: [String], image: String = Engine.image, gpus: [Int] = [], memoryMiB: Int = 256, cpuMillis: Int = 1000,
        inputs: [StagedInput] = [], mounts: [ResolvedMount] = [], allowRoot: Bool = false, workdir: String? = nil
    ) -> TaskLaunch {
        let spec = WorkloadSpec(
            image: image, command: command, workdir: workdir, resources: Resources(cpuMillis: cpuMillis, memoryMiB: memoryMiB, gpus: gpus.count))
        return TaskLaunch(
            workloadID: id, tenant: "acme", spec: spec, taskIndex: 0, node: "local", gpus: gpus, inputs: inputs, mounts: mounts, imageReference: image,
            allowRoot: allowRoot)
    }

    /// Reads a task's log file.
    static func log(_ runtime: ContainerRuntime, _ id: String, _ stream: String = "stdout") -> String {
        (try? String(contentsOfFile: runtime.logPath(workloadID: id, taskIndex: 0, stream: stream), encoding: .utf8)) ?? ""
    }

    /// Whether the engine still has a container of this task.
    static func containerExists(_ runtime: ContainerRuntime, _ id: String) async -> Bool {
        let (status, _) = (try? await runtime.engine.call(.GET, "/containers/\(ContainerRuntime.name(id, 0))/json")) ?? (0, .init())
        return status == 200
    }
}

@Test("the engine is there whenever the run requires it (CI as root): never a silent skip", .enabled(if: Engine.required))
func engineIsThere() async throws {
    try #require(Engine.available, "CANOPY_REQUIRE_DOCKER=1 but CANOPY_TEST_DOCKER_DIR has no docker.sock: the container suite would be skipped")
}

@Suite("container runtime on a real dockerd", .enabled(if: Engine.available, "needs the dockerd scripts/test.sh starts"))
struct ContainerRuntimeTests {
    /// Starts a runtime with its engine watch running, for the body.
    func withRuntime(network: String? = nil, _ body: (ContainerRuntime, String) async throws -> Void) async throws {
        let root = try makeTempDir("canopy-ctr")
        let runtime = try Engine.runtime(root: root, network: network)
        let watch = Task { await runtime.run() }
        defer { watch.cancel() }
        try await body(runtime, root)
    }

    @Test("runs a command in its image: exit code, both output streams, the container removed afterwards")
    func runAndExit() async throws {
        try await withRuntime { runtime, _ in
            let launched = try await runtime.launch(Engine.launch("w1", ["sh", "-c", "echo hello; echo oops >&2; exit 3"]))
            #expect(!launched.handle.isEmpty)
            let exit = try #require(await nextExit(of: "w1", runtime.events))
            #expect(exit.exitCode == 3)
            #expect(exit.reason == nil)
            #expect(Engine.log(runtime, "w1") == "hello\n")
            #expect(Engine.log(runtime, "w1", "stderr") == "oops\n")
            #expect(await Engine.containerExists(runtime, "w1") == false)
        }
    }

    @Test("runs as the task's own unprivileged uid, or as root only where allowed; never privileged")
    func identity() async throws {
        try await withRuntime { runtime, _ in
            _ = try await runtime.launch(Engine.launch("u1", ["sh", "-c", "id -u; cat /proc/self/status | grep CapEff"]))
            _ = try #require(await nextExit(of: "u1", runtime.events))
            let lines = Engine.log(runtime, "u1").split(separator: "\n")
            if geteuid() == 0 {
                let uid = try #require(UInt32(lines.first ?? ""))
                #expect(TaskIdentities.defaultRange.contains(uid))
                #expect(lines.last?.hasSuffix("0000000000000000") == true, "an unprivileged uid has no effective capabilities: \(lines)")
            }
            _ = try await runtime.launch(Engine.launch("u2", ["sh", "-c", "id -u; grep NoNewPrivs /proc/self/status"], allowRoot: true))
            _ = try #require(await nextExit(of: "u2", runtime.events))
            let root = Engine.log(runtime, "u2")
            #expect(root.hasPrefix("0\n"))
            #expect(root.contains("NoNewPrivs:\t1"))
        }
    }

    @Test("memory over the limit ends the task as OutOfMemory; the CPU limit and the pids limit are set")
    func limits() async throws {
        try await withRuntime { runtime, _ in
            _ = try await runtime.launch(Engine.launch("m1", ["sh", "-c", "tail /dev/zero"], memoryMiB: 32))
            let exit = try #require(await nextExit(of: "m1", runtime.events, timeout: .seconds(60)))
            #expect(exit.reason?.code == .outOfMemory)
            #expect(exit.exitCode == 137)

            _ = try await runtime.launch(
                Engine.launch(
                    "c1", ["sh", "-c", "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us /sys/fs/cgroup/pids/pids.max"],
                    cpuMillis: 500))
            _ = try #require(await nextExit(of: "c1", runtime.events))
            let values = Engine.log(runtime, "c1").split(separator: "\n").compactMap { Int($0) }
            #expect(values.count == 3)
            if values.count == 3 {
                #expect(Double(values[0]) / Double(values[1]) == 0.5, "half a CPU: \(values)")
                #expect(values[2] == 4096)
            }
        }
    }

    @Test("stop: SIGTERM first, SIGKILL after the grace period")
    func stopAndGrace() async throws {
        try await withRuntime { runtime, _ in
            let polite = try await runtime.launch(
                Engine.launch("s1", ["sh", "-c", "trap 'echo got TERM; exit 0' TERM; echo up; while true; do sleep 0.1; done"]))
            #expect(await eventually { Engine.log(runtime, "s1").contains("up") })
            await runtime.stop(workloadID: "s1", taskIndex: 0, handle: polite.handle, grace: 10)
            let e1 = try #require(await nextExit(of: "s1", runtime.events))
            #expect(e1.exitCode == 0)
            #expect(Engine.log(runtime, "s1").contains("got TERM"))

            let stubborn = try await runtime.launch(Engine.launch("s2", ["sh", "-c", "trap '' TERM; echo up; while true; do sleep 0.1; done"]))
            #expect(await eventually { Engine.log(runtime, "s2").contains("up") })
            let started = Date()
            await runtime.stop(workloadID: "s2", taskIndex: 0, handle: stubborn.handle, grace: 1)
            let e2 = try #require(await nextExit(of: "s2", runtime.events))
            // Killed (137), not waited for: well before the engine's own 10 s default plus a loaded machine's delays
            // (a full local run on 2 CPUs once took 11.6 s here, against a bound of 8 s).
            #expect(e2.exitCode == 137)
            #expect(Date().timeIntervalSince(started) < 30)
        }
    }

    @Test("a restarted server re-adopts a running container, collects one that ended, and never starts a second")
    func readoption() async throws {
        let root = try makeTempDir("canopy-ctr")
        let first = try Engine.runtime(root: root)
        // r1 runs until the test lets it end (a file in its /workspace), not for a time a loaded machine may outrun.
        let a = try await first.launch(
            Engine.launch("r1", ["sh", "-c", "echo before; while [ ! -e /workspace/go ]; do sleep 0.1; done; echo after; exit 7"]))
        let letGo = { FileManager.default.createFile(atPath: root + "/r1/task-0/work/go", contents: nil) }
        let b = try await first.launch(Engine.launch("r2", ["sh", "-c", "exit 5"]))
        // The first server goes away without a word (its watch never ran); a second one recovers both tasks.
        try await Task.sleep(for: .milliseconds(500))
        first.cancelPumps()
        let second = try Engine.runtime(root: root)
        // As the controller does: every task is recovered before the runtime starts watching its engine (which
        // then sweeps the server's containers no task owns).
        #expect(await second.recover(workloadID: "r1", taskIndex: 0, handle: a.handle) == .running)
        guard case .exited(let ended) = await second.recover(workloadID: "r2", taskIndex: 0, handle: b.handle) else {
            Issue.record("a container that ended while the server was away is reported as exited")
            return
        }
        let watch = Task { await second.run() }
        defer { watch.cancel() }
        #expect(ended.exitCode == 5)
        #expect(await Engine.containerExists(second, "r2") == false)
        // The uid stays locked while the container runs, by a holder process that outlived the first runtime.
        let lockText = try? String(contentsOfFile: root + "/r1/task-0/uid.lock", encoding: .utf8)
        let fields = lockText?.split(separator: " ") ?? []
        if geteuid() == 0 {
            let holder = try #require(fields.first.flatMap { pid_t($0) }, "a uid lock holder is recorded: \(lockText ?? "none")")
            let uid = String(fields[2]).trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(kill(holder, 0) == 0)
            let held = try await runProcess("/usr/bin/flock", ["-n", TaskIdentities.defaultLockDirectory + "/" + uid, "true"])
            #expect(held.status != 0, "the uid's lock is held while its container runs")
            _ = letGo()
            let exit = try #require(await nextExit(of: "r1", second.events))
            #expect(exit.exitCode == 7)
            #expect(await eventually { kill(holder, 0) != 0 }, "the holder ends with its container")
            let free = try await runProcess("/usr/bin/flock", ["-n", TaskIdentities.defaultLockDirectory + "/" + uid, "true"])
            #expect(free.status == 0, "the uid's lock is free once the container ended")
        } else {
            _ = letGo()
            let exit = try #require(await nextExit(of: "r1", second.events))
            #expect(exit.exitCode == 7)
        }
        #expect(Engine.log(second, "r1") == "before\nafter\n")
        // A task recorded as never started, with a container created by a launch that crashed half-way: not run.
        #expect(await second.recover(workloadID: "r3", taskIndex: 0, handle: nil) == .vanished)
    }

    @Test("a restarted server removes its own containers that no task owns (a crash between create and the task's write)")
    func orphansSwept() async throws {
        let root = try makeTempDir("canopy-ctr")
        let first = try Engine.runtime(root: root)
        _ = try await first.launch(Engine.launch("orphan", ["sleep", "60"]))
        first.cancelPumps()
        try await Task.sleep(for: .milliseconds(2100))
        // Another server's container on the same engine is not this server's to remove.
        let other = try Engine.runtime(root: try makeTempDir("canopy-ctr-other"))
        let kept = try await other.launch(Engine.launch("kept", ["sleep", "60"]))
        let second = try Engine.runtime(root: root)
        let watch = Task { await second.run() }
        defer { watch.cancel() }
        #expect(await eventually(timeout: .seconds(20)) { await Engine.containerExists(second, "orphan") == false })
        #expect(await Engine.containerExists(other, "kept"))
        // The other server, which never watched its engine here, is cleaned up by hand: container and lock holder.
        _ = try? await other.engine.call(.DELETE, "/containers/\(kept.handle)", query: [("force", "1")])
        for dir in [other.logPath(workloadID: "kept", taskIndex: 0, stream: "stdout"), first.logPath(workloadID: "orphan", taskIndex: 0, stream: "stdout")] {
            let lock = (dir as NSString).deletingLastPathComponent + "/uid.lock"
            if let pid = (try? String(contentsOfFile: lock, encoding: .utf8))?.split(separator: " ").first.flatMap({ pid_t($0) }) {
                #expect(dir.contains("orphan") ? kill(pid, 0) != 0 : true, "the orphan's lock holder went with it")
                kill(pid, SIGKILL)
                waitpid(pid, nil, 0)
            }
        }
    }

    @Test("the working directory is /workspace: inputs staged in, outputs collected; mounts read-only and read-write")
    func filesAndMounts() async throws {
        try await withRuntime { runtime, _ in
            let data = try makeTempDir("canopy-data")
            try "in\n".write(toFile: data + "/input.txt", atomically: true, encoding: .utf8)
            try FileManager.default.createDirectory(atPath: data + "/ro", withIntermediateDirectories: true)
            try "dataset\n".write(toFile: data + "/ro/d.txt", atomically: true, encoding: .utf8)
            chmod(data + "/ro/d.txt", 0o600)
            try FileManager.default.createDirectory(atPath: data + "/rw", withIntermediateDirectories: true)
            let script = """
                pwd; cat input.txt; cat /data/d.txt; echo x > /data/new.txt 2>/dev/null && echo ro-writable || echo ro-refused
                echo result > out.txt; echo shared > /shared/w.txt && echo rw-ok
                """
            _ = try await runtime.launch(
                Engine.launch(
                    "f1", ["sh", "-c", script], inputs: [StagedInput(localSource: data + "/input.txt", path: "input.txt")],
                    mounts: [
                        ResolvedMount(hostPath: data + "/ro", target: "/data", readOnly: true, fromDataStore: true),
                        ResolvedMount(hostPath: data + "/rw", target: "/shared", readOnly: false, fromDataStore: true),
                    ]))
            let exit = try #require(await nextExit(of: "f1", runtime.events))
            #expect(exit.exitCode == 0, "\(Engine.log(runtime, "f1", "stderr"))")
            #expect(Engine.log(runtime, "f1") == "/workspace\nin\ndataset\nro-refused\nrw-ok\n")
            #expect((try? String(contentsOfFile: data + "/rw/w.txt", encoding: .utf8)) == "shared\n")
            let out = try makeTempDir("canopy-out") + "/out.txt"
            try await runtime.collectOutputs(
                workloadID: "f1", taskIndex: 0, spec: WorkloadSpec(command: ["x"]),
                outputs: [StagedOutput(path: "out.txt", localDestination: out, destination: "/out.txt", overwrite: false)])
            #expect((try? String(contentsOfFile: out, encoding: .utf8)) == "result\n")
        }
    }

    @Test("a container sees neither the server's data directory nor another task's directory or processes")
    func isolation() async throws {
        try await withRuntime { runtime, root in
            let secret = (root as NSString).deletingLastPathComponent + "/" + (root as NSString).lastPathComponent + "-secret"
            try "server secret\n".write(toFile: secret, atomically: true, encoding: .utf8)
            let victim = try await runtime.launch(Engine.launch("v1", ["sh", "-c", "echo mine > /workspace/private.txt; echo up; sleep 30"]))
            #expect(await eventually { Engine.log(runtime, "v1").contains("up") })
            let probe = """
                cat \(secret) 2>/dev/null && echo read-secret
                cat \(root)/v1/task-0/work/private.txt 2>/dev/null && echo read-other-task
                ls \(root) 2>/dev/null && echo saw-workloads
                kill -9 -1 2>/dev/null
                for p in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $p; echo; done | grep -c '^sleep ' | sed 's/^/sleepers-visible=/'
                ls /workspace/..; echo done
                """
            _ = try await runtime.launch(Engine.launch("a1", ["sh", "-c", probe]))
            let exit = try #require(await nextExit(of: "a1", runtime.events))
            let out = Engine.log(runtime, "a1")
            #expect(exit.exitCode == 0, "\(out) \(Engine.log(runtime, "a1", "stderr"))")
            #expect(!out.contains("read-secret") && !out.contains("read-other-task") && !out.contains("saw-workloads"), "\(out)")
            #expect(out.contains("sleepers-visible=0"), "another task's processes are not visible: \(out)")
            #expect(out.hasSuffix("done\n"))
            // The other task lives on.
            #expect(await Engine.containerExists(runtime, "v1"))
            await runtime.stop(workloadID: "v1", taskIndex: 0, handle: victim.handle, grace: 1)
            _ = await nextExit(of: "v1", runtime.events)
        }
    }

    @Test("the engine is given pinned mount points (bind mounts of the checked descriptors), never a path a task could swap", .enabled(if: geteuid() == 0))
    func pinnedMounts() async throws {
        try await withRuntime { runtime, root in
            let data = try makeTempDir("canopy-pin")
            try "a\n".write(toFile: data + "/a", atomically: true, encoding: .utf8)
            let launched = try await runtime.launch(
                Engine.launch(
                    "p1", ["sh", "-c", "cat /data/a; sleep 30"], mounts: [ResolvedMount(hostPath: data, target: "/data", readOnly: true, fromDataStore: true)]))
            #expect(await eventually { Engine.log(runtime, "p1") == "a\n" })
            struct Doc: Decodable {
                struct M: Decodable {
                    var Source: String
                    var Destination: String
                }
                var Mounts: [M]
            }
            let doc = try await runtime.engine.call(Doc.self, .GET, "/containers/\(launched.handle)/json")
            let source = doc.Mounts.first { $0.Destination == "/data" }?.Source
            #expect(source == root + "/p1/task-0/mounts/0", "\(doc.Mounts)")
            // Swapping the original path for a link now changes nothing the container sees.
            try FileManager.default.moveItem(atPath: data, toPath: data + ".old")
            try FileManager.default.createSymbolicLink(atPath: data, withDestinationPath: "/etc")
            await runtime.stop(workloadID: "p1", taskIndex: 0, handle: launched.handle, grace: 0)
            _ = await nextExit(of: "p1", runtime.events)
            #expect(!FileManager.default.fileExists(atPath: root + "/p1/task-0/mounts/0"), "the pinned point is gone with the container")
            #expect(FileManager.default.fileExists(atPath: data + ".old/a"), "the mounted data itself is untouched")
        }
    }

    @Test("a host path is mounted only if no component of it is a symbolic link (a link planted in an allowed directory)")
    func hostMountLinks() async throws {
        try await withRuntime { runtime, _ in
            let allowed = try makeTempDir("canopy-allowed")
            try "host file\n".write(toFile: allowed + "/f.txt", atomically: true, encoding: .utf8)
            try FileManager.default.createSymbolicLink(atPath: allowed + "/escape", withDestinationPath: "/")
            await #expect(throws: StagingError.self) {
                _ = try await runtime.launch(
                    Engine.launch("h1", ["ls", "/x"], mounts: [ResolvedMount(hostPath: allowed + "/escape/etc", target: "/x", readOnly: true)]))
            }
            #expect(await Engine.containerExists(runtime, "h1") == false)
            _ = try await runtime.launch(
                Engine.launch("h2", ["cat", "/x/f.txt"], mounts: [ResolvedMount(hostPath: allowed, target: "/x", readOnly: true)]))
            let exit = try #require(await nextExit(of: "h2", runtime.events))
            #expect(exit.exitCode == 0 && Engine.log(runtime, "h2") == "host file\n")
        }
    }

    @Test("GPUs by the task's indices: CUDA_VISIBLE_DEVICES and NVIDIA_VISIBLE_DEVICES, none when it asked for none")
    func fakeGPUs() async throws {
        try await withRuntime { runtime, _ in
            _ = try await runtime.launch(Engine.launch("g1", ["sh", "-c", "echo $CUDA_VISIBLE_DEVICES/$NVIDIA_VISIBLE_DEVICES"], gpus: [1, 3]))
            _ = try #require(await nextExit(of: "g1", runtime.events))
            #expect(Engine.log(runtime, "g1") == "1,3/1,3\n")
            _ = try await runtime.launch(Engine.launch("g2", ["sh", "-c", "echo [$CUDA_VISIBLE_DEVICES]/$NVIDIA_VISIBLE_DEVICES"]))
            _ = try #require(await nextExit(of: "g2", runtime.events))
            #expect(Engine.log(runtime, "g2") == "[]/void\n")
        }
    }

    @Test("an image the engine does not have fails the launch with a message naming it")
    func unknownImage() async throws {
        try await withRuntime { runtime, _ in
            await #expect(throws: CanopyError.self) {
                _ = try await runtime.launch(Engine.launch("x1", ["true"], image: "canopy/nothing:here"))
            }
            #expect(await Engine.containerExists(runtime, "x1") == false)
        }
    }
}

/// The runtime's events until `done` accepts all seen so far, or all that came within 60 seconds.
func events(_ runtime: ContainerRuntime, until done: @escaping @Sendable ([BackendEvent]) -> Bool) async -> [BackendEvent] {
    let collected = await withTaskGroup(of: [BackendEvent]?.self) { group in
        group.addTask {
            var seen: [BackendEvent] = []
            for await e in runtime.events {
                seen.append(e)
                if done(seen) { return seen }
            }
            return seen
        }
        group.addTask {
            try? await Task.sleep(for: .seconds(60))
            return nil
        }
        let first = await group.next() ?? nil
        group.cancelAll()
        return first
    }
    return collected ?? []
}

func isProblem(_ e: BackendEvent) -> Bool { if case .reachability(let p) = e { p != nil } else { false } }
func isBack(_ e: BackendEvent) -> Bool { if case .reachability(nil) = e { true } else { false } }
func exit(of id: String, in events: [BackendEvent]) -> TaskExit? {
    for case .exited(let e) in events where e.workloadID == id { return e }
    return nil
}

/// An engine of its own, killed and started again under the runtime.
@Suite("container runtime when its engine goes away", .serialized, .enabled(if: Engine.available && geteuid() == 0, "needs root and dockerd"))
struct EngineOutageTests {
    @Test("launches wait while the engine is away; a task whose container died meanwhile is settled when it returns")
    func outage() async throws {
        let dir = try makeTempDir("canopy-dk2")
        let script = FileManager.default.currentDirectoryPath + "/scripts/dockerd.sh"
        defer { _ = try? runProcessBlocking("/bin/bash", [script, "down", dir]) }
        let up = try await runProcess("/bin/bash", [script, "up", dir])
        try #require(up.status == 0, "\(up.stderr)")
        let root = try makeTempDir("canopy-ctr")
        let runtime = ContainerRuntime(
            engine: DockerEngine(socketPath: dir + "/docker.sock"), configuration: .init(workloadsRoot: root), identities: try TaskIdentities())
        let watch = Task { await runtime.run() }
        defer { watch.cancel() }
        _ = try await runtime.launch(Engine.launch("o1", ["sh", "-c", "echo up; sleep 600"]))
        #expect(await eventually { Engine.log(runtime, "o1").contains("up") })

        // The engine dies without a word.
        let pid = try String(contentsOfFile: dir + "/dockerd.pid", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        kill(pid_t(pid) ?? 0, SIGKILL)
        let away = await events(runtime) { $0.contains(where: isProblem) }
        #expect(away.contains(where: isProblem), "the runtime reports that its engine is away")
        await #expect(throws: BackendUnavailable.self) { _ = try await runtime.launch(Engine.launch("o2", ["true"])) }

        // It comes back (and, without live-restore, ends the containers it finds).
        let again = try await runProcess("/bin/bash", [script, "up", dir])
        try #require(again.status == 0, "\(again.stderr)")
        let back = await events(runtime) { seen in seen.contains(where: isBack) && exit(of: "o1", in: seen) != nil }
        #expect(back.contains(where: isBack))
        #expect(exit(of: "o1", in: away + back) != nil, "the task whose container died with the engine is reported once it answers again")
        _ = try await runtime.launch(Engine.launch("o3", ["sh", "-c", "exit 4"]))
        #expect(await nextExit(of: "o3", runtime.events)?.exitCode == 4)
    }
}

@Suite("image archives read before the engine loads them")
struct ImageArchiveTests {
    /// Writes a tar archive with the given members (name, content) through Python's tarfile (gzip when asked).
    func archive(_ members: [(String, String)], gzip: Bool = false) async throws -> String {
        let path = try makeTempDir("canopy-archive") + "/a.tar" + (gzip ? ".gz" : "")
        let script = """
            import io, json, sys, tarfile
            members = json.loads(sys.argv[2])
            with tarfile.open(sys.argv[1], "w:gz" if sys.argv[1].endswith(".gz") else "w") as t:
                for name, content in members:
                    data = content.encode()
                    info = tarfile.TarInfo(name); info.size = len(data)
                    t.addfile(info, io.BytesIO(data))
            """
        let json = String(decoding: try JSONSerialization.data(withJSONObject: members.map { [$0.0, $0.1] }), as: UTF8.self)
        let r = try await runProcess("/usr/bin/python3", ["-c", script, path, json])
        try #require(r.status == 0, "\(r.stderr)")
        return path
    }

    @Test("the names of a current archive are read; old-format, compressed and non-archives are refused before loading")
    func names() async throws {
        let current = try await archive([
            ("abc/layer.tar", String(repeating: "x", count: 700)),
            ("manifest.json", #"[{"Config":"c.json","RepoTags":["canopy/public/busybox:1.36","busybox:latest"],"Layers":["abc/layer.tar"]}]"#),
        ])
        #expect(try ImageArchive.references(in: current) == ["canopy/public/busybox:1.36", "busybox:latest"])
        let legacy = try await archive([("repositories", #"{"canopy/public/busybox":{"1.36":"abc"}}"#), ("abc/layer.tar", "x")])
        #expect(throws: CanopyError.self) { _ = try ImageArchive.references(in: legacy) }
        let gz = try await archive([("manifest.json", "[]")], gzip: true)
        #expect(throws: CanopyError.self) { _ = try ImageArchive.references(in: gz) }
        let notTar = try makeTempDir("canopy-archive") + "/x"
        try String(repeating: "garbage ", count: 200).write(toFile: notTar, atomically: true, encoding: .utf8)
        #expect(throws: CanopyError.self) { _ = try ImageArchive.references(in: notTar) }
        if let dir = Engine.dir {
            #expect(try ImageArchive.references(in: dir + "/busybox-image.tar") == ["busybox:canopy-test"])
        }
        // A decoy manifest first and the real one under a name the engine cleans to manifest.json: refused.
        let decoy = try await archive([
            ("manifest.json", #"[{"RepoTags":["x:1"]}]"#), ("a/../manifest.json", #"[{"RepoTags":["canopy/public/busybox:1.36"]}]"#),
        ])
        #expect(throws: CanopyError.self) { _ = try ImageArchive.references(in: decoy) }
        #expect(ImageArchive.clean("./a/../b/./c") == "b/c" && ImageArchive.clean("../../manifest.json") == "manifest.json")
        #expect(ImageArchive.paxPath(Data("30 mtime=1350244992.023960108\n22 path=manifest.json\n".utf8)) == "manifest.json")
        // A record length from a hostile archive that would overflow an addition is refused, not a trap.
        #expect(ImageArchive.paxPath(Data("4 a\n9223372036854775807 path=x\n".utf8)) == nil)
    }
}

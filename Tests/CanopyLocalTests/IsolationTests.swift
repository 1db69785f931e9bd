import CanopyCore
import CanopyHost
import CanopyLocal
import CanopyTesting
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What a task written by a stranger must not be able to do: reach the server's descriptors, other tasks, the
/// server's files through staging, or outlive its workload. Each test is an attack that worked on an earlier main.
@Suite("task isolation on real processes")
struct IsolationTests {
    static let root = getuid() == 0
    /// Root, and cgroups that can be written (an executor with nothing to say about its limits).
    static let rootWithCgroups =
        getuid() == 0
        && ((try? LocalExecutor(configuration: .init(workloadsRoot: "/tmp/canopy-probe-\(getpid())", shimPath: buildProductsDir + "/canopy-shim", declaredGPUs: []))).map {
            $0.limitations.isEmpty
        } ?? false)

    func executor(_ root: String) throws -> LocalExecutor {
        try LocalExecutor(configuration: .init(workloadsRoot: root + "/workloads", shimPath: buildProductsDir + "/canopy-shim", declaredGPUs: [], cpuMillis: 2000, memoryMiB: 4096))
    }

    func launch(_ e: LocalExecutor, _ id: String, _ command: [String], env: [String: String] = [:], inputs: [StagedInput] = []) async throws -> pid_t {
        let spec = WorkloadSpec(command: command, env: env, resources: Resources(cpuMillis: 500, memoryMiB: 256))
        return pid_t(try await e.launch(TaskLaunch(workloadID: id, tenant: "t", spec: spec, taskIndex: 0, node: "local", gpus: [], inputs: inputs)).handle)!
    }

    func log(_ e: LocalExecutor, _ id: String, _ stream: String = "stdout") -> String {
        (try? String(contentsOfFile: e.logPath(workloadID: id, taskIndex: 0, stream: stream), encoding: .utf8)) ?? ""
    }

    /// Waits for the exit of workload `id` among the executor's events.
    func exit(of id: String, _ e: LocalExecutor, timeout: Duration = .seconds(30)) async throws -> TaskExit {
        let found = await nextExit(of: id, e.events, timeout: timeout)
        return try #require(found, "no exit of \(id) within \(timeout)")
    }

    /// The command's pid: the shim's only child.
    func commandPID(ofShim shim: pid_t) async throws -> pid_t {
        var child: pid_t?
        _ = await eventually {
            let text = (try? String(contentsOfFile: "/proc/\(shim)/task/\(shim)/children", encoding: .utf8)) ?? ""
            child = text.split(separator: " ").compactMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }.first
            return child != nil
        }
        return try #require(child, "the shim \(shim) started no command")
    }

    func descriptors(of pid: pid_t) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []).sorted()
    }

    @Test("no descriptor of the server reaches a task or its shim")
    func noInheritedDescriptors() async throws {
        let dir = try makeTempDir()
        let e = try executor(dir)
        // A descriptor the server holds without close-on-exec, as a listening socket or a client's connection can be.
        let leaky = open("/dev/null", O_RDONLY)
        defer { close(leaky) }
        #expect(leaky > 2)
        let shim = try await launch(e, "fds", ["sh", "-c", "exec sleep 30"])
        let command = try await commandPID(ofShim: shim)
        #expect(await eventually { (try? String(contentsOfFile: "/proc/\(command)/comm", encoding: .utf8)) == "sleep\n" })
        #expect(descriptors(of: command) == ["0", "1", "2"])
        // The shim holds one more as root: the lock of the task's uid, and nothing else.
        if getuid() == 0 {
            #expect(descriptors(of: shim) == ["0", "1", "2", "3"])
            let lock = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(shim)/fd/3")
            #expect(lock.hasPrefix(TaskIdentities.defaultLockDirectory + "/"))
        } else {
            #expect(descriptors(of: shim) == ["0", "1", "2"])
        }
        await e.stop(workloadID: "fds", taskIndex: 0, handle: String(shim), grace: 1)
        _ = try await exit(of: "fds", e)
    }

    @Test("tasks get the standard PATH, and a missing program is reported as not found with the PATH searched")
    func standardPath() async throws {
        let e = try executor(try makeTempDir())
        _ = try await launch(e, "path", ["sh", "-c", "echo $PATH"])
        _ = try await exit(of: "path", e)
        #expect(log(e, "path") == LocalExecutor.standardPath + "\n")
        _ = try await launch(e, "nosuch", ["nosuchprog-canopy"])
        #expect(try await exit(of: "nosuch", e).exitCode == 127)
        #expect(log(e, "nosuch", "stderr") == "canopy: cannot run nosuchprog-canopy: not found in PATH=\(LocalExecutor.standardPath)\n")
    }

    @Test("each running task has its own uid and cannot signal, trace, read or write another task", .enabled(if: IsolationTests.root))
    func tasksApart() async throws {
        let dir = try makeTempDir()
        let e = try executor(dir)
        let bobShim = try await launch(
            e, "bob", ["sh", "-c", "id -u; echo mine > mine; ipcmk -M 4096 -p 0666 >/dev/null; ipcs -m | grep -q 0x && echo shm; echo lock > /run/lock/bob-lock; cat /run/lock/bob-lock; echo ready; exec sleep 30"],
            env: ["API_KEY": "bob-secret"])
        let bob = try await commandPID(ofShim: bobShim)
        #expect(await eventually { log(e, "bob").hasSuffix("ready\n") })
        // Bob's own shared memory and lock file exist, in his namespaces.
        #expect(log(e, "bob").hasSuffix("\nshm\nlock\nready\n"), "\(log(e, "bob")) \(log(e, "bob", "stderr"))")
        let bobWork = "\(dir)/workloads/bob/task-0/work"
        let attack = """
            id -u
            kill -9 \(bob) 2>/dev/null && echo KILLED
            kill -0 \(bob) 2>/dev/null && echo SIGNALLED
            cat /proc/\(bob)/environ 2>/dev/null | tr '\\0' '\\n' | grep -q bob-secret && echo READ-ENVIRON
            python3 -c 'import ctypes, sys; sys.exit(0 if ctypes.CDLL(None).ptrace(16, \(bob), 0, 0) == 0 else 1)' 2>/dev/null && echo PTRACED
            cat /proc/\(bob)/maps >/dev/null 2>&1 && echo READ-MAPS
            ls /proc/\(bob)/fd >/dev/null 2>&1 && echo LISTED-FDS
            cat /proc/\(bob)/cmdline 2>/dev/null | grep -q sleep && echo READ-CMDLINE
            cat /proc/\(bobShim)/cmdline 2>/dev/null | grep -q shim && echo READ-SHIM
            ls /proc | grep -qx \(bob) && echo SAW-PID
            ipcs -m 2>/dev/null | grep -q 0x && echo SAW-SHM
            cat /run/lock/bob-lock 2>/dev/null && echo READ-LOCK
            ls \(bobWork) >/dev/null 2>&1 && echo LISTED
            cat \(bobWork)/mine 2>/dev/null && echo READ-FILE
            echo evil 2>/dev/null > \(bobWork)/mine && echo WROTE
            ls \(dir)/workloads >/dev/null 2>&1 && echo LISTED-WORKLOADS
            true
            """
        _ = try await launch(e, "alice", ["sh", "-c", attack])
        #expect(try await exit(of: "alice", e).exitCode == 0)
        let lines = log(e, "alice").split(separator: "\n").map(String.init)
        let bobUID = log(e, "bob").split(separator: "\n").first.map(String.init)
        #expect(lines.count == 1, "the attack got through: \(lines)")
        #expect(lines.first != bobUID && lines.first != "0" && bobUID != "0")
        #expect(kill(bob, 0) == 0, "bob's task must still run")
        var st = stat()
        #expect(lstat(bobWork, &st) == 0 && st.st_mode & 0o777 == 0o700 && String(st.st_uid) == bobUID)
        await e.stop(workloadID: "bob", taskIndex: 0, handle: String(bobShim), grace: 1)
        _ = try await exit(of: "bob", e)
        // Once it has ended, its directory is closed to every task, whichever uid comes next.
        #expect(lstat("\(dir)/workloads/bob/task-0", &st) == 0 && st.st_mode & 0o777 == 0o700)
    }

    @Test("tasks share no /tmp, /var/tmp or /dev/shm with each other or with the host", .enabled(if: IsolationTests.root))
    func privateTmp() async throws {
        let e = try executor(try makeTempDir())
        let marker = "canopy-tmp-\(UUID().uuidString.prefix(8))"
        let bobShim = try await launch(
            e, "tmpbob", ["sh", "-c", "umask 0; for d in /tmp /var/tmp /dev/shm; do echo secret > $d/\(marker); done; echo ready; exec sleep 30"])
        #expect(await eventually { log(e, "tmpbob") == "ready\n" }, "bob: \(log(e, "tmpbob", "stderr"))")
        _ = try await launch(e, "tmpalice", ["sh", "-c", "for d in /tmp /var/tmp /dev/shm; do cat $d/\(marker) 2>/dev/null && echo FOUND-$d; done; true"])
        #expect(try await exit(of: "tmpalice", e).exitCode == 0)
        #expect(log(e, "tmpalice") == "", "alice read bob's scratch files: \(log(e, "tmpalice"))")
        #expect(log(e, "tmpalice", "stderr") == "")
        for d in ["/tmp", "/var/tmp", "/dev/shm"] {
            #expect(!FileManager.default.fileExists(atPath: "\(d)/\(marker)"), "\(d) is the host's")
        }
        await e.stop(workloadID: "tmpbob", taskIndex: 0, handle: String(bobShim), grace: 1)
        _ = try await exit(of: "tmpbob", e)
    }

    @Test("a GPU the task was not given cannot be opened, whatever it does with CUDA_VISIBLE_DEVICES", .enabled(if: IsolationTests.root))
    func otherGPUsHidden() async throws {
        // Stand-in device nodes (regular files): the shim covers what it is told to, in the task's namespace only.
        // The same mechanism was seen on a real H200 (see the README's GPU section).
        let root = try makeTempDir()
        // Not under /tmp, which the task's namespace replaces.
        let devices = "/run/canopy-test-gpus-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: devices, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: devices) }
        chmod(devices, 0o755)
        for n in 0..<2 { FileManager.default.createFile(atPath: "\(devices)/nvidia\(n)", contents: Data("gpu\(n)\n".utf8), attributes: [.posixPermissions: 0o666]) }
        var config = LocalExecutor.Configuration(
            workloadsRoot: root + "/workloads", shimPath: buildProductsDir + "/canopy-shim",
            declaredGPUs: [GPU(index: 0, model: "fake", uuid: "GPU-a", minor: 0), GPU(index: 1, model: "fake", uuid: "GPU-b", minor: 1)],
            cpuMillis: 2000, memoryMiB: 4096)
        config.gpuDeviceDirectory = devices
        let e = try LocalExecutor(configuration: config)
        let spec = WorkloadSpec(command: ["sh", "-c", "echo $CUDA_VISIBLE_DEVICES $CANOPY_GPUS; cat \(devices)/nvidia0 \(devices)/nvidia1"], resources: Resources(cpuMillis: 500, memoryMiB: 256))
        _ = try await e.launch(TaskLaunch(workloadID: "gpu1", tenant: "t", spec: spec, taskIndex: 0, node: "local", gpus: [1]))
        #expect(try await exit(of: "gpu1", e).exitCode == 1)
        #expect(log(e, "gpu1") == "GPU-b 1\ngpu1\n")
        #expect(log(e, "gpu1", "stderr").contains("nvidia0: Permission denied"))
        // Nothing changed outside the task's namespace.
        #expect((try? String(contentsOfFile: devices + "/nvidia0", encoding: .utf8)) == "gpu0\n")
    }

    @Test("a task's LD_PRELOAD never loads into the root supervisor: its environment reaches its command only, after the drop", .enabled(if: IsolationTests.root))
    func environmentNotForRoot() async throws {
        let root = try makeTempDir()
        // A library that, loaded into any process, records that process's euid.
        let source = root + "/probe.c"
        try "#include <stdio.h>\n#include <unistd.h>\n__attribute__((constructor)) static void probe(void) { FILE *f = fopen(\"\(root)/seen\", \"a\"); if (f) { fprintf(f, \"%d\\n\", (int)geteuid()); fclose(f); } }\n"
            .write(toFile: source, atomically: true, encoding: .utf8)
        let compiler = ["/usr/bin/cc", "/usr/bin/gcc", "/usr/bin/clang"].first { FileManager.default.isExecutableFile(atPath: $0) }
        let cc = try #require(compiler, "a C compiler (the toolchain's clang)")
        #expect(try await runProcess(cc, ["-shared", "-fPIC", "-o", root + "/probe.so", source]).status == 0)
        chmod(root, 0o777)
        chmod(root + "/probe.so", 0o755)
        // The probe works: loaded into a root process, it says 0.
        #expect(try await runProcess("/bin/true", [], env: ["LD_PRELOAD": root + "/probe.so"]).status == 0)
        #expect((try? String(contentsOfFile: root + "/seen", encoding: .utf8)) == "0\n")
        try FileManager.default.removeItem(atPath: root + "/seen")
        // A task that names it (by its host path: in the task's own /tmp it is not even there) loads it into nothing
        // that runs as root.
        let e = try executor(root)
        _ = try await launch(e, "preload", ["true"], env: ["LD_PRELOAD": root + "/probe.so"])
        #expect(try await exit(of: "preload", e).exitCode == 0)
        let seen = ((try? String(contentsOfFile: root + "/seen", encoding: .utf8)) ?? "").split(separator: "\n")
        #expect(!seen.contains("0"), "processes that loaded the task's LD_PRELOAD, by euid: \(seen)")
    }

    @Test("a task uid that still owns a socket (handed to another process by an earlier task) is not given to a new task", .enabled(if: IsolationTests.root))
    func uidWithSocketsNotReused() async throws {
        let uid: UInt32 = 64_990
        let root = try makeTempDir()
        let e = try LocalExecutor(
            configuration: .init(
                workloadsRoot: root + "/workloads", shimPath: buildProductsDir + "/canopy-shim", declaredGPUs: [], cpuMillis: 2000, memoryMiB: 4096,
                taskUIDs: uid...uid))
        // A process (root here) holding a listening socket made under the uid, as an earlier task's would be.
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        holder.arguments = [
            "-c",
            "import os, socket, sys, time; os.seteuid(\(uid)); s = socket.socket(); s.bind(('127.0.0.2', 0)); s.listen(); os.seteuid(0); print('ready', flush=True); time.sleep(60)",
        ]
        let out = Pipe()
        holder.standardOutput = out
        try holder.run()
        _ = out.fileHandleForReading.availableData
        #expect(ListeningSockets.uidOwnsSockets(uid))
        await #expect(throws: CanopyError.self) { _ = try await launch(e, "reuse1", ["true"]) }
        // SIGKILL: the test process may hold SIGTERM blocked, and its children inherit the mask.
        kill(holder.processIdentifier, SIGKILL)
        holder.waitUntilExit()
        #expect(!ListeningSockets.uidOwnsSockets(uid))
        _ = try await launch(e, "reuse2", ["true"])
        #expect(try await exit(of: "reuse2", e).exitCode == 0)
    }

    @Test("a daemon started with setsid dies with its task", .enabled(if: IsolationTests.rootWithCgroups))
    func noSurvivors() async throws {
        let e = try executor(try makeTempDir())
        _ = try await launch(e, "daemon", ["sh", "-c", "setsid sleep 313 >/dev/null 2>&1 & echo $!"])
        #expect(try await exit(of: "daemon", e).exitCode == 0)
        let pid = try #require(pid_t(log(e, "daemon").trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(await eventually(timeout: .seconds(5)) {
            let comm = (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)) ?? ""
            return comm != "sleep\n"
        }, "sleep 313 (pid \(pid)) outlived its task")
    }

    @Test("outputs never follow a link, a FIFO or another user's file, at any depth", .enabled(if: IsolationTests.root))
    func outputAttacks() async throws {
        let dir = try makeTempDir()
        let e = try executor(dir)
        let secret = dir + "/server-secret"
        try "top secret\n".write(toFile: secret, atomically: true, encoding: .utf8)
        chmod(secret, 0o600)
        let script = """
            ln -s \(dir) d; ln -s /etc e; mkdir -p real/sub; echo fine > real/sub/f; ln -s /etc real/link
            mkfifo fifo; mkdir nest; ln -s ../d nest/up; ln -s \(secret) direct
            """
        _ = try await launch(e, "thief", ["sh", "-c", script])
        #expect(try await exit(of: "thief", e).exitCode == 0)
        // A hard link to a file the task cannot read (made here as root: protected_hardlinks stops the task itself).
        #expect(link(secret, "\(dir)/workloads/thief/task-0/work/hard") == 0)
        let store = dir + "/store"
        try FileManager.default.createDirectory(atPath: store, withIntermediateDirectories: true)
        let spec = WorkloadSpec(command: ["true"])
        func collect(_ path: String) async -> String? {
            let out = StagedOutput(path: path, localDestination: "\(store)/\(UUID().uuidString)", destination: "/out", overwrite: false)
            do {
                try await e.collectOutputs(workloadID: "thief", taskIndex: 0, spec: spec, outputs: [out])
                return nil
            } catch {
                return "\(error)"
            }
        }
        for attack in ["d/server-secret", "e/shadow", "e/passwd", "nest/up/server-secret", "direct", "hard", "fifo", "../../exit", "/../../pid", "e"] {
            #expect(await collect(attack) != nil, "output \(attack) was collected")
        }
        // The tree itself is fine: links inside it are skipped, the file is copied.
        #expect(await collect("real") == nil)
        let copied = try FileManager.default.subpathsOfDirectory(atPath: store)
        #expect(copied.contains { $0.hasSuffix("/sub/f") })
        #expect(!copied.contains { $0.contains("link") })
        #expect(!copied.contains { $0.hasSuffix("server-secret") || $0.hasSuffix("shadow") })
    }

    @Test("an output nested thousands of directories deep is refused, not followed down until the server's stack ends", .enabled(if: IsolationTests.root))
    func deepOutput() async throws {
        let dir = try makeTempDir()
        let e = try executor(dir)
        let script = "import os\nos.mkdir('o'); os.chdir('o')\nfor i in range(6000):\n    os.mkdir('a'); os.chdir('a')\nopen('f', 'w').write('x')\n"
        _ = try await launch(e, "deep", ["python3", "-c", script])
        #expect(try await exit(of: "deep", e).exitCode == 0, "\(log(e, "deep", "stderr"))")
        let out = StagedOutput(path: "o", localDestination: dir + "/store/deep", destination: "/deep", overwrite: false)
        await #expect(throws: StagingError.self) {
            try await e.collectOutputs(workloadID: "deep", taskIndex: 0, spec: WorkloadSpec(command: ["true"]), outputs: [out])
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/store/deep"))
        // A tree 100 levels deep is still collected.
        let shallow = "import os\nos.mkdir('p'); os.chdir('p')\nfor i in range(100):\n    os.mkdir('a'); os.chdir('a')\nopen('f', 'w').write('x')\n"
        _ = try await launch(e, "shallow", ["python3", "-c", shallow])
        #expect(try await exit(of: "shallow", e).exitCode == 0)
        let ok = StagedOutput(path: "p", localDestination: dir + "/store/shallow", destination: "/shallow", overwrite: false)
        try await e.collectOutputs(workloadID: "shallow", taskIndex: 0, spec: WorkloadSpec(command: ["true"]), outputs: [ok])
        let f = dir + "/store/shallow/" + Array(repeating: "a", count: 100).joined(separator: "/") + "/f"
        #expect(FileManager.default.fileExists(atPath: f))
    }

    @Test("inputs are never written through a link in the task's directory", .enabled(if: IsolationTests.root))
    func inputAttacks() async throws {
        let dir = try makeTempDir()
        let e = try executor(dir)
        let outside = dir + "/outside"
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        let source = dir + "/input.txt"
        try "data\n".write(toFile: source, atomically: true, encoding: .utf8)
        // A link left in the working directory (by an earlier run of the same task) where an input goes.
        let work = "\(dir)/workloads/again/task-0/work"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        #expect(symlink(outside, work + "/in") == 0)
        await #expect(throws: (any Error).self) {
            _ = try await launch(e, "again", ["true"], inputs: [StagedInput(localSource: source, path: "in/input.txt")])
        }
        #expect(!FileManager.default.fileExists(atPath: outside + "/input.txt"))
        // The same input at a clean path arrives, owned by the task.
        _ = try await launch(e, "clean", ["sh", "-c", "cat in/input.txt; test -O in/input.txt && echo owned"], inputs: [StagedInput(localSource: source, path: "in/input.txt")])
        _ = try await exit(of: "clean", e)
        #expect(log(e, "clean") == "data\nowned\n")
    }

    @Test("two servers on one machine never hand out the same task uid", .enabled(if: IsolationTests.root))
    func uidsAreMachineWide() throws {
        let locks = try makeTempDir() + "/locks"
        let first = try TaskIdentities(range: 70001...70002, lockDirectory: locks)
        let second = try TaskIdentities(range: 70001...70002, lockDirectory: locks)
        let a = try first.allocate()
        let b = try second.allocate()
        #expect(a.uid != b.uid)
        #expect(throws: CanopyError.self) { _ = try first.allocate() }
        // The lock goes with its holder (the shim, in real use): then the uid is free again, for either server.
        close(a.lockFD)
        first.release(a.uid)
        // Free once every holder has closed it: a process another test spawns at this moment holds a copy of every
        // descriptor until its exec, so allow that instant.
        var lease: TaskIdentities.Lease?
        for _ in 0..<200 where lease == nil {
            lease = try? second.allocate()
            if lease == nil { usleep(10_000) }
        }
        let c = try #require(lease, "the uid never became free")
        #expect(c.uid == a.uid)
        close(b.lockFD)
        close(c.lockFD)
        #expect(throws: CanopyError.self) { try TaskIdentities(range: 0...10, lockDirectory: locks) }
        #expect(throws: CanopyError.self) { try TaskIdentities.parseRange("10-5") }
        #expect(try TaskIdentities.parseRange("61184-65519") == 61184...65519)
    }
}

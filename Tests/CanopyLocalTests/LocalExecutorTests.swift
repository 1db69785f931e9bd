import CanopyCore
import CanopyHost
import CanopyLocal
import CanopyTesting
import Foundation
import Testing

@Suite("local executor on real processes")
struct LocalExecutorTests {
    func executor(_ root: String, gpus: [GPU]? = [GPU(index: 0, model: "T4"), GPU(index: 1, model: "T4")]) throws -> LocalExecutor {
        try LocalExecutor(configuration: .init(workloadsRoot: root, shimPath: buildProductsDir + "/canopy-shim", declaredGPUs: gpus, cpuMillis: 2000, memoryMiB: 4096))
    }

    func launch(_ e: LocalExecutor, _ id: String, _ command: [String], gpus: [Int] = [], memoryMiB: Int = 256, workdir: String? = nil, index: Int = 0, tasks: Int = 1) async throws -> String {
        let spec = WorkloadSpec(command: command, env: ["GREETING": "hi"], workdir: workdir, resources: Resources(cpuMillis: 500, memoryMiB: memoryMiB, gpus: gpus.count), tasks: tasks)
        return try await e.launch(TaskLaunch(workloadID: id, tenant: "t", spec: spec, taskIndex: index, node: "local", gpus: gpus)).handle
    }

    func nextExit(_ e: LocalExecutor, timeout: Duration = .seconds(30)) async -> TaskExit? {
        await CanopyTesting.nextExit(e.events, timeout: timeout)
    }

    @Test("a task runs with its environment, GPUs, own directory and exit code")
    func runsTask() async throws {
        let root = try makeTempDir()
        let e = try executor(root)
        _ = try await launch(e, "w1", ["sh", "-c", "echo $GREETING $CANOPY_WORKLOAD_ID $CANOPY_TASK_INDEX $CANOPY_TASK_COUNT gpus=$CUDA_VISIBLE_DEVICES; pwd; echo oops >&2; exit 7"], gpus: [1], workdir: "sub/dir", index: 1, tasks: 2)
        let exit = await nextExit(e)
        #expect(exit?.workloadID == "w1" && exit?.taskIndex == 1 && exit?.exitCode == 7)
        let out = try String(contentsOfFile: e.logPath(workloadID: "w1", taskIndex: 1, stream: "stdout"), encoding: .utf8)
        #expect(out == "hi w1 1 2 gpus=1\n\(root)/w1/task-1/work/sub/dir\n")
        #expect(try String(contentsOfFile: e.logPath(workloadID: "w1", taskIndex: 1, stream: "stderr"), encoding: .utf8) == "oops\n")
    }

    @Test("a task without GPUs sees none on a GPU node")
    func hidesGPUs() async throws {
        let e = try executor(try makeTempDir())
        _ = try await launch(e, "nogpu", ["sh", "-c", "echo \"[$CUDA_VISIBLE_DEVICES]\""])
        _ = await nextExit(e)
        #expect(try String(contentsOfFile: e.logPath(workloadID: "nogpu", taskIndex: 0, stream: "stdout"), encoding: .utf8) == "[]\n")
    }

    @Test("tasks never run as root when the server does: each gets a uid of its own from the range", .enabled(if: getuid() == 0))
    func unprivileged() async throws {
        let e = try executor(try makeTempDir())
        _ = try await launch(e, "who", ["sh", "-c", "id -u; id -g"])
        #expect(await nextExit(e)?.exitCode == 0)
        let ids = try String(contentsOfFile: e.logPath(workloadID: "who", taskIndex: 0, stream: "stdout"), encoding: .utf8).split(separator: "\n")
        let uid = try #require(ids.first.flatMap { UInt32($0) })
        #expect(TaskIdentities.defaultRange.contains(uid))
        #expect(ids.count == 2 && ids[1] == ids[0])
    }

    @Test("stop sends SIGTERM, then SIGKILL to a task that ignores it")
    func stop() async throws {
        let e = try executor(try makeTempDir())
        let pid = try await launch(e, "polite", ["sleep", "30"])
        await e.stop(workloadID: "polite", taskIndex: 0, handle: pid, grace: 5)
        #expect(await nextExit(e)?.exitCode == 143)
        let stubborn = try await launch(e, "stubborn", ["sh", "-c", "trap '' TERM; echo ready; sleep 30"])
        let log = e.logPath(workloadID: "stubborn", taskIndex: 0, stream: "stdout")
        #expect(await eventually { (try? String(contentsOfFile: log, encoding: .utf8)) == "ready\n" }, "stubborn said: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "nothing"), \((try? String(contentsOfFile: e.logPath(workloadID: "stubborn", taskIndex: 0, stream: "stderr"), encoding: .utf8)) ?? "")")
        let started = ContinuousClock.now
        await e.stop(workloadID: "stubborn", taskIndex: 0, handle: stubborn, grace: 0.3)
        #expect(await nextExit(e)?.exitCode == 137)
        #expect(ContinuousClock.now - started < .seconds(5))
    }

    @Test("a missing program fails with 127 and says why")
    func missingProgram() async throws {
        let e = try executor(try makeTempDir())
        _ = try await launch(e, "missing", ["/no/such/program"])
        #expect(await nextExit(e)?.exitCode == 127)
        #expect(try String(contentsOfFile: e.logPath(workloadID: "missing", taskIndex: 0, stream: "stderr"), encoding: .utf8).contains("cannot run /no/such/program"))
    }

    @Test("a workdir may not leave the task's directory")
    func workdirEscape() async throws {
        let e = try executor(try makeTempDir())
        await #expect(throws: CanopyError.self) { _ = try await launch(e, "esc", ["true"], workdir: "../../etc") }
        let layout = TaskLayout(root: "/r", workloadID: "w", index: 0)
        #expect(layout.resolve(workdir: "/abs/path") == "/r/w/task-0/work/abs/path")
        #expect(layout.resolve(workdir: "a/../b") == "/r/w/task-0/work/b")
        #expect(layout.resolve(workdir: "..") == nil)
    }

    @Test("the memory limit is enforced through cgroups, and the end is reported as out of memory", .enabled(if: IsolationTests.rootWithCgroups))
    func memoryLimit() async throws {
        let e = try executor(try makeTempDir())
        _ = try await launch(e, "hog", ["python3", "-c", "x = bytearray(300 * 1024 * 1024); print(len(x))"], memoryMiB: 64)
        let exit = await nextExit(e)
        #expect(exit?.exitCode == 137)
        #expect(exit?.reason?.code == .outOfMemory)
    }

    @Test("after a restart, a still-running task is adopted and one that ended is read from its exit file")
    func recovery() async throws {
        let root = try makeTempDir()
        let first = try executor(root)
        // Runs until the test lets it go, so it is provably still running when the second executor looks.
        _ = try await launch(first, "long", ["sh", "-c", "while [ ! -e go ]; do sleep 0.05; done; exit 5"])
        _ = try await launch(first, "short", ["sh", "-c", "exit 3"])
        // Ended, shim and all, before the second executor looks.
        #expect(await CanopyTesting.nextExit(of: "short", first.events)?.exitCode == 3, "the short task never ended")
        // A second executor over the same directory stands for the restarted server.
        let second = try executor(root)
        #expect(await second.recover(workloadID: "long", taskIndex: 0, handle: nil) == .running)
        // Let it go now, whatever fails below: a test never leaves a task behind (its exit is buffered in the stream).
        #expect(FileManager.default.createFile(atPath: TaskLayout(root: root, workloadID: "long", index: 0).work + "/go", contents: nil))
        guard case .exited(let ended) = await second.recover(workloadID: "short", taskIndex: 0, handle: nil) else {
            Issue.record("expected the exit file to be read")
            return
        }
        #expect(ended.exitCode == 3)
        #expect(await second.recover(workloadID: "never", taskIndex: 0, handle: nil) == .vanished)
        let adopted = await nextExit(second)
        #expect(adopted?.workloadID == "long" && adopted?.exitCode == 5)
    }

    @Test("listening sockets are read from /proc/net/tcp and tcp6 with their owners")
    func listeners() {
        let v4 = """
              sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
               0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 61184        0 1234 1 0000000000000000 100 0 0 10 0
               1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99 1 0000000000000000 100 0 0 10 0
               2: 0100007F:1F90 0100007F:A2C4 01 00000000:00000000 00:00000000 00000000 61184        0 0 1 0000000000000000 100 0 0 10 0
            """
        let found = ListeningSockets.parse(v4, v6: false)
        #expect(found == [.init(address: "127.0.0.1", port: 8080, uid: 61184, inode: 1234), .init(address: "0.0.0.0", port: 22, uid: 0, inode: 99)])
        #expect(found[1].connectAddress == "127.0.0.1")
        let v6 = """
              sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
               0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1
               1: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 2 1
            """
        let six = ListeningSockets.parse(v6, v6: true)
        #expect(six.map(\.address) == ["::", "::1"] && six.map(\.port) == [8080, 80] && six[0].connectAddress == "::1")
        #expect(six.map(\.inode) == [1, 2])
    }

    @Test("declared and discovered GPU inventories parse")
    func gpuInventory() throws {
        let gpus = try GPUDiscovery.parseDeclared("A100:2,T4:1")
        #expect(gpus.map(\.index) == [0, 1, 2] && gpus.map(\.model) == ["A100", "A100", "T4"])
        #expect(throws: CanopyError.self) { try GPUDiscovery.parseDeclared("T4") }
        #expect(throws: CanopyError.self) { try GPUDiscovery.parseDeclared("T4:-1") }
        let smi = GPUDiscovery.parseNvidiaSMI("0, NVIDIA H100 80GB HBM3, 81559, GPU-1a2b\n1, NVIDIA H100 80GB HBM3, 81559, GPU-3c4d\n")
        #expect(smi.count == 2 && smi[1].index == 1 && smi[0].memoryMiB == 81559 && smi[1].uuid == "GPU-3c4d")
        // As a real H200 machine answered (driver 580.159.04): the bus id joins nvidia-smi to the driver's minor.
        let proc = try makeTempDir()
        try FileManager.default.createDirectory(atPath: proc + "/0000:00:06.0", withIntermediateDirectories: true)
        try "Model: \t\t NVIDIA H200\nBus Location: \t 0000:00:06.0\nDevice Minor: \t 3\nGPU Excluded:\t No\n".write(
            toFile: proc + "/0000:00:06.0/information", atomically: true, encoding: .utf8)
        let minors = GPUDiscovery.deviceMinors(root: proc)
        #expect(minors == ["0000:00:06.0": 3])
        let h200 = GPUDiscovery.parseNvidiaSMI("0, NVIDIA H200, 143771, GPU-fa79d183-5a32-3cd4-fd42-9fb742f524d4, 00000000:00:06.0\n", minors: minors)
        #expect(h200 == [GPU(index: 0, model: "NVIDIA H200", memoryMiB: 143771, uuid: "GPU-fa79d183-5a32-3cd4-fd42-9fb742f524d4", minor: 3)])
    }
}

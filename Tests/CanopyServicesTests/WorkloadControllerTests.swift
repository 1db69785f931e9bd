import CanopyCore
import CanopySQLite
import CanopyTesting
import Foundation
import Testing

@testable import CanopyServices

/// One node, as a fixed inventory.
struct FixedInventory: NodeInventory {
    let node = Node(name: "local", cpuMillis: 4000, memoryMiB: 8192, gpus: [GPU(index: 0, model: "Tesla T4"), GPU(index: 1, model: "Tesla T4")])
    func nodes() async throws -> [Node] { [node] }
}

/// A controller on a real SQLite file, with in-memory runtimes, running as it does in the server.
struct Harness {
    let store: SQLiteStore
    let controller: WorkloadController
    let process: InMemoryRuntime
    let container: InMemoryRuntime
    let running: Task<Void, any Error>

    /// Seeds the store with `seed`, recovers, and starts the controller.
    static func start(
        clock: Clock = .system, withContainer: Bool = true, stopGrace: Double = 3, retry: Double = 5, seed: [Workload] = [],
        prepare: (InMemoryRuntime, InMemoryRuntime) -> Void = { _, _ in }
    ) async throws -> Harness {
        let store = try SQLiteStore(path: try makeTempDir("controller") + "/canopy.sqlite")
        for w in seed {
            let stored = try await store.insert(w)
            try await store.update([stored])
        }
        let process = InMemoryRuntime(kind: .process)
        let container = InMemoryRuntime(kind: .container)
        var runtimes = Runtimes(inventory: FixedInventory(), placed: [process])
        if withContainer { runtimes.register(container) }
        prepare(process, container)
        let controller = WorkloadController(store: store, runtimes: runtimes, clock: clock, stopGrace: stopGrace, unreachableRetry: retry)
        try await controller.recover()
        let running = Task { try await controller.run() }
        return Harness(store: store, controller: controller, process: process, container: container, running: running)
    }

    /// Stores and admits a workload, as `WorkloadService.submit` does.
    func submit(_ spec: WorkloadSpec, id: String = UUID().uuidString) async throws -> String {
        let stored = try await store.insert(Workload(id: id, tenant: "t", owner: "u", spec: spec, createdAt: Date()))
        await controller.admit(stored)
        return stored.id
    }

    /// The workload, live while the controller holds it, else as stored.
    func workload(_ id: String) async throws -> Workload? {
        if let w = await controller.live(id) { return w }
        return try await store.workload(id: id)
    }

    /// Whether the workload reaches `phase` in time; a final phase (or stopped) only once it is written.
    func reaches(_ id: String, _ phase: Phase) async throws -> Bool {
        if phase.isActive { return try await eventually { try await workload(id)?.phase == phase } }
        return try await eventually { try await store.workload(id: id)?.phase == phase }
    }

    /// Stops the controller.
    func shutdown() { running.cancel() }
}

@Suite("workload controller: scheduling, task ends, stops, deadlines, recovery, reachability")
struct WorkloadControllerTests {
    @Test("the runtime rule: the backend when there is one; a container for an image when one is registered; else a process")
    func runtimeRule() {
        let process = InMemoryRuntime(kind: .process)
        let container = InMemoryRuntime(kind: .container)
        var runtimes = Runtimes(inventory: FixedInventory(), placed: [process])
        let image = WorkloadSpec(image: "pytorch", command: ["true"])
        #expect(runtimes.kind(for: image) == .process)
        runtimes.register(container)
        #expect(runtimes.kind(for: image) == .container)
        #expect(runtimes.kind(for: WorkloadSpec(command: ["true"])) == .process)
        // A task recorded before runtimes were: the process runtime.
        var old = TaskStatus(index: 0)
        old.backendID = "123"
        #expect(runtimes.kind(of: old, spec: image) == .process)
        #expect(runtimes.runtime(RuntimeKind(rawValue: "gone")) == nil)
    }

    @Test("the scheduler places a gang and launches every task on the workload's runtime")
    func placesAndLaunches() async throws {
        let h = try await Harness.start()
        defer { h.shutdown() }
        let id = try await h.submit(WorkloadSpec(command: ["train"], resources: Resources(cpuMillis: 1000, memoryMiB: 512, gpus: 1), tasks: 2))
        #expect(try await h.reaches(id, .running))
        let launches = h.process.launches
        #expect(launches.map(\.taskIndex).sorted() == [0, 1])
        #expect(Set(launches.flatMap(\.gpus)) == [0, 1])
        #expect(h.container.launches.isEmpty)
        let w = try #require(try await h.workload(id))
        #expect(w.tasks.allSatisfy { $0.runtime == .process && $0.backendID?.hasPrefix("process-") == true && $0.phase == .running })
        let view = try #require(await h.controller.nodeViews().first)
        #expect(view.allocatedCPUMillis == 2000)
        #expect(view.allocatedGPUs == [0, 1])
    }

    @Test("an image runs in the container runtime, with its reference and resolved host mounts")
    func imageToContainer() async throws {
        let h = try await Harness.start()
        defer { h.shutdown() }
        var w = Workload(
            id: "img", tenant: "t", owner: "u",
            spec: WorkloadSpec(image: "pytorch", command: ["python"], mounts: [Mount(source: "host:/datasets", target: "/data", readOnly: true)]),
            createdAt: Date())
        w.imageReference = "docker.io/pytorch/pytorch:2.5"
        let stored = try await h.store.insert(w)
        await h.controller.admit(stored)
        #expect(try await h.reaches("img", .running))
        let launch = try #require(h.container.launches.first)
        #expect(launch.imageReference == "docker.io/pytorch/pytorch:2.5")
        #expect(launch.mounts == [ResolvedMount(hostPath: "/datasets", target: "/data", readOnly: true)])
        #expect(launch.allowRoot == false)
        #expect(h.process.launches.isEmpty)
        #expect(try await h.workload("img")?.tasks[0].runtime == .container)
    }

    @Test("task exits settle the workload: succeeded with code 0, or failed with the failing task's code")
    func exitsSettle() async throws {
        let h = try await Harness.start()
        defer { h.shutdown() }
        let ok = try await h.submit(WorkloadSpec(command: ["true"], tasks: 2))
        let bad = try await h.submit(WorkloadSpec(command: ["false"], tasks: 2))
        #expect(try await h.reaches(ok, .running))
        #expect(try await h.reaches(bad, .running))
        h.process.end(ok, task: 0, exitCode: 0)
        h.process.end(ok, task: 1, exitCode: 0)
        #expect(try await h.reaches(ok, .succeeded))
        #expect(try await h.store.workload(id: ok)?.exitCode == 0)
        // Gang: task 1 fails, so task 0 is stopped, and the workload fails with task 1's code.
        h.process.end(bad, task: 1, exitCode: 3)
        #expect(try await h.reaches(bad, .failed))
        let failed = try #require(try await h.store.workload(id: bad))
        #expect(failed.exitCode == 3)
        #expect(failed.reason?.code == .nonZeroExit)
        #expect(h.process.stops.map(\.taskIndex) == [0])
        #expect(failed.tasks.map(\.phase) == [.cancelled, .failed])
        #expect(await h.controller.nodeViews().first?.allocatedCPUMillis == 0)
    }

    @Test("max duration is enforced on the manual clock")
    func maxDuration() async throws {
        let clock = ManualClock()
        let h = try await Harness.start(clock: clock.clock)
        defer { h.shutdown() }
        let id = try await h.submit(WorkloadSpec(command: ["sleep"], maxDurationSeconds: 60))
        #expect(try await h.reaches(id, .running))
        // Well before the limit, several checks pass without a stop.
        clock.advance(by: 59)
        try await Task.sleep(for: .milliseconds(600))
        #expect(h.process.stops.isEmpty)
        clock.advance(by: 2)
        #expect(try await h.reaches(id, .failed))
        let w = try #require(try await h.store.workload(id: id))
        #expect(w.reason?.code == .maxDurationExceeded)
        #expect(w.exitCode == 143)
        #expect(h.process.stops.count == 1)
    }

    @Test("a stop signals the task with the grace period and waits for it to end")
    func stopWithGrace() async throws {
        let h = try await Harness.start(stopGrace: 7)
        defer { h.shutdown() }
        h.process.exitOnStop(false)
        let id = try await h.submit(WorkloadSpec(kind: .interactive, command: ["jupyter"]))
        #expect(try await h.reaches(id, .running))
        let stopping = await h.controller.stop(id)
        #expect(stopping?.phase == .stopping)
        #expect(await eventually { h.process.stops.count == 1 })
        let stop = try #require(h.process.stops.first)
        #expect(stop.grace == 7)
        #expect(stop.handle == (try await h.workload(id))?.tasks[0].backendID)
        // It has not ended yet: still stopping.
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await h.workload(id)?.phase == .stopping)
        h.process.end(id, task: 0, exitCode: 143)
        #expect(try await h.reaches(id, .stopped))
        #expect(try await h.store.workload(id: id)?.reason?.code == .stoppedByUser)
    }

    @Test("a pending workload is cancelled at once")
    func stopPending() async throws {
        let h = try await Harness.start()
        defer { h.shutdown() }
        let id = try await h.submit(WorkloadSpec(command: ["true"], hold: true))
        let stopped = await h.controller.stop(id)
        #expect(stopped?.phase == .cancelled)
        #expect(h.process.launches.isEmpty)
    }
}

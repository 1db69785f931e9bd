import CanopyCore
import CanopySQLite
import CanopyTesting
import Foundation
import Testing

@testable import CanopyServices

@Suite("workload controller and its runtimes: recovery routing, unreachable runtimes")
struct ControllerRuntimeTests {
    /// A workload that was running before a restart, its task recorded as `runtime` with `handle`.
    static func wasRunning(_ id: String, runtime: RuntimeKind?, handle: String, image: String? = nil) -> Workload {
        var w = Workload(id: id, tenant: "t", owner: "u", spec: WorkloadSpec(image: image, command: ["run"]), createdAt: Date())
        w.phase = .running
        w.startedAt = Date()
        w.tasks[0].phase = .running
        w.tasks[0].node = "local"
        w.tasks[0].backendID = handle
        w.tasks[0].runtime = runtime
        return w
    }

    @Test("after a restart each task is recovered, and stopped, through the runtime it recorded")
    func recoverRoutes() async throws {
        // Given: a container task, a process task from before runtimes were recorded, and a task of a runtime
        // this server no longer has.
        let seed = [
            Self.wasRunning("in-container", runtime: .container, handle: "c-9", image: "pytorch"),
            Self.wasRunning("old-process", runtime: nil, handle: "4242"),
            Self.wasRunning("elsewhere", runtime: RuntimeKind(rawValue: "kubernetes"), handle: "pod-1"),
        ]
        // The answers are set before recovery runs: the harness recovers as it starts.
        let h = try await Harness.start(
            seed: seed,
            prepare: { process, container in
                container.answerRecovery("in-container", task: 0, with: .running)
                process.answerRecovery("old-process", task: 0, with: .exited(TaskExit(workloadID: "old-process", taskIndex: 0, exitCode: 0, at: Date())))
            })
        defer { h.shutdown() }
        // Then: each runtime was asked about its own task only, with the recorded handle.
        #expect(h.container.recoveries.map(\.workloadID) == ["in-container"])
        #expect(h.container.recoveries.first?.handle == "c-9")
        #expect(h.process.recoveries.map(\.workloadID) == ["old-process"])
        #expect(h.process.recoveries.first?.handle == "4242")
        #expect(try await h.workload("in-container")?.phase == .running)
        #expect(try await h.reaches("old-process", .succeeded))
        // The task of a runtime that is not configured is reported vanished, with a reason that says why.
        #expect(try await h.reaches("elsewhere", .failed))
        let lost = try #require(try await h.store.workload(id: "elsewhere"))
        #expect(lost.tasks[0].reason?.code == .taskVanished)
        #expect(lost.tasks[0].reason?.message.contains("kubernetes") == true)
        // When: the recovered container task is stopped. Then: its own runtime signals it.
        _ = await h.controller.stop("in-container")
        #expect(try await h.reaches("in-container", .cancelled))
        #expect(h.container.stops.map(\.handle) == ["c-9"])
        #expect(h.process.stops.isEmpty)
    }

    @Test("an engine gone between placement and launch sends the workload back to Pending, its allocation freed, until it answers")
    func unavailableAtLaunch() async throws {
        let h = try await Harness.start(retry: 1)
        defer { h.shutdown() }
        // The engine went away without the runtime noticing yet: only the launch finds out.
        h.container.setUnreachable("Cannot connect to the Docker daemon", report: false)
        let id = try await h.submit(WorkloadSpec(image: "pytorch", command: ["train"], resources: Resources(cpuMillis: 1000, memoryMiB: 512, gpus: 2)))
        #expect(try await eventually { try await h.workload(id)?.reason?.code == .backendUnavailable })
        let waiting = try #require(try await h.workload(id))
        #expect(waiting.phase == .pending)
        #expect(waiting.reason?.message.contains("Cannot connect to the Docker daemon") == true)
        #expect(waiting.tasks[0].phase == .pending && waiting.tasks[0].node == nil)
        #expect(await h.controller.nodeViews().first?.allocatedGPUs == [])
        #expect(h.container.launches.isEmpty)
        // It was not lost: the store has it pending (written when it went back).
        #expect(try await eventually { try await h.store.workload(id: id)?.phase == .pending })
        // When: the engine is back. Then: a later pass places and launches it.
        h.container.setUnreachable(nil, report: false)
        #expect(try await h.reaches(id, .running))
        #expect(h.container.launches.count == 1)
    }

    @Test("while a runtime reports itself unreachable, workloads for it wait with the reason; others run; it answers, they start")
    func unreachableRuntimeWaits() async throws {
        let h = try await Harness.start()
        defer { h.shutdown() }
        h.container.setUnreachable("dockerd is not running")
        #expect(await eventually { await h.controller.backendIsUnreachable() })
        let image = try await h.submit(WorkloadSpec(image: "pytorch", command: ["train"]))
        let plain = try await h.submit(WorkloadSpec(command: ["true"]))
        #expect(try await h.reaches(plain, .running))
        #expect(try await eventually { try await h.workload(image)?.reason?.code == .backendUnavailable })
        let waiting = try #require(try await h.workload(image))
        #expect(waiting.phase == .pending)
        #expect(waiting.reason?.message.contains("dockerd is not running") == true)
        #expect(waiting.conditions == [Reason(.backendUnavailable, "dockerd is not running")])
        #expect(try await h.workload(plain)?.conditions == nil)
        #expect(h.container.launches.isEmpty)
        h.container.setUnreachable(nil)
        #expect(try await h.reaches(image, .running))
        #expect(try await h.workload(image)?.conditions == nil)
    }
}

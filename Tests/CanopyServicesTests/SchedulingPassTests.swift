import CanopyCore
import Foundation
import Testing

@testable import CanopyServices

@Suite("scheduling pass: order, gangs, GPU models, reservation and backfill")
struct SchedulingPassTests {
    let now = Date(timeIntervalSince1970: 1_000_000)
    let node = Node(name: "local", cpuMillis: 4000, memoryMiB: 8192, gpus: [GPU(index: 0, model: "Tesla T4"), GPU(index: 1, model: "Tesla T4")])

    func w(_ id: String, seq: Int64, cpu: Int = 1000, gpus: Int = 0, model: String? = nil, tasks: Int = 1, priority: Int = 0, queue: String = "default",
           maxDuration: Int? = nil, hold: Bool = false) -> SchedulingPass.Candidate {
        var x = Workload(
            id: id, tenant: "t", owner: "u", seq: seq,
            spec: WorkloadSpec(queue: queue, priority: priority, command: ["true"], resources: Resources(cpuMillis: cpu, memoryMiB: 100, gpus: gpus, gpuModel: model),
                               tasks: tasks, maxDurationSeconds: maxDuration, hold: hold), createdAt: now)
        x.seq = seq
        return .init(workload: x, queuePriority: queue == "urgent" ? 10 : 0)
    }

    func alloc(_ id: String, cpu: Int = 0, gpus: [Int] = [], endsIn: Double? = nil) -> Allocation {
        Allocation(workloadID: id, node: "local", cpuMillis: cpu, memoryMiB: 0, gpus: gpus, endsBy: endsIn.map { now.addingTimeInterval($0) })
    }

    @Test("FIFO within a priority; higher priority and higher-priority queues first")
    func order() {
        let c = [w("a", seq: 1), w("b", seq: 2, priority: 5), w("c", seq: 3, queue: "urgent"), w("d", seq: 4)]
        #expect(SchedulingPass.ordered(c).map(\.workload.id) == ["c", "b", "a", "d"])
        let out = SchedulingPass(nodes: [node], allocations: [], candidates: [w("x", seq: 2, cpu: 3000), w("y", seq: 1, cpu: 3000)], now: now).run()
        #expect(out.starts.map(\.workloadID) == ["y"])
        #expect(out.positions["y"] == 1 && out.positions["x"] == 2)
    }

    @Test("a gang starts all its tasks or none, with exclusive GPUs")
    func gang() {
        let out = SchedulingPass(nodes: [node], allocations: [], candidates: [w("g", seq: 1, gpus: 1, tasks: 2)], now: now).run()
        #expect(out.starts.count == 1)
        #expect(out.starts[0].placements.map(\.gpus) == [[0], [1]])
        let none = SchedulingPass(nodes: [node], allocations: [alloc("busy", gpus: [0])], candidates: [w("g", seq: 1, gpus: 1, tasks: 2)], now: now).run()
        #expect(none.starts.isEmpty)
        #expect(none.reasons["g"]?.code == .insufficientResources)
        #expect(none.reasons["g"]?.message == "waiting for 2 GPUs: 1 of 2 free on node local")
    }

    @Test("a GPU model must match the device name")
    func models() {
        let out = SchedulingPass(nodes: [node], allocations: [], candidates: [w("t4", seq: 1, gpus: 1, model: "t4"), w("a100", seq: 2, gpus: 1, model: "A100")], now: now).run()
        #expect(out.starts.map(\.workloadID) == ["t4"])
        #expect(out.reasons["a100"]?.message.contains("(A100)") == true)
    }

    @Test("held workloads wait with reason Held and keep their queue position")
    func held() {
        let out = SchedulingPass(nodes: [node], allocations: [], candidates: [w("h", seq: 1, hold: true), w("r", seq: 2)], now: now).run()
        #expect(out.starts.map(\.workloadID) == ["r"])
        #expect(out.reasons["h"]?.code == .held)
        #expect(out.positions["h"] == 1)
    }

    @Test("a large gang is not starved by a stream of small workloads")
    func noStarvation() {
        // Two GPUs busy; the gang of 2 GPUs waits. A later 1-GPU workload must not take the GPU that frees up.
        var allocations = [alloc("old1", gpus: [0]), alloc("old2", gpus: [1])]
        var candidates = [w("big", seq: 1, gpus: 2), w("small1", seq: 2, gpus: 1)]
        var out = SchedulingPass(nodes: [node], allocations: allocations, candidates: candidates, now: now).run()
        #expect(out.starts.isEmpty)
        #expect(out.reservation?.workloadID == "big")
        // old1 ends: one GPU free. It is held for big, not given to small1.
        allocations.removeFirst()
        out = SchedulingPass(nodes: [node], allocations: allocations, candidates: candidates, now: now).run()
        #expect(out.starts.isEmpty)
        #expect(out.reasons["small1"]?.code == .reservedForOther)
        // old2 ends: big starts first; small1 waits for it.
        allocations.removeFirst()
        candidates.append(w("small2", seq: 3, gpus: 1))
        out = SchedulingPass(nodes: [node], allocations: allocations, candidates: candidates, now: now).run()
        #expect(out.starts.map(\.workloadID) == ["big"])
    }

    @Test("backfill: a short workload may use held resources only if it ends before the reservation's shadow time")
    func backfill() {
        // The running task ends in 600 s, so big can start in 600 s at the latest.
        let allocations = [alloc("running", gpus: [0], endsIn: 600)]
        let candidates = [w("big", seq: 1, gpus: 2), w("short", seq: 2, gpus: 1, maxDuration: 300), w("long", seq: 3, gpus: 1, maxDuration: 900),
                          w("unbounded", seq: 4, gpus: 1)]
        let out = SchedulingPass(nodes: [node], allocations: allocations, candidates: candidates, now: now).run()
        #expect(out.reservation?.shadow == now.addingTimeInterval(600))
        #expect(out.starts.map(\.workloadID) == ["short"])
        #expect(out.reasons["long"] != nil && out.reasons["unbounded"] != nil)
    }

    @Test("CPU-only work fills around GPU holds")
    func cpuAroundHold() {
        let out = SchedulingPass(nodes: [node], allocations: [alloc("gpuhog", gpus: [0, 1])], candidates: [w("big", seq: 1, gpus: 2), w("cpu", seq: 2, cpu: 1000)], now: now).run()
        #expect(out.starts.map(\.workloadID) == ["cpu"])
    }
}

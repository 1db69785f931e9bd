import CanopyCore
import CanopySQLite
import CanopyTesting
import Foundation
import Testing

@Suite("SQLite store on real files")
struct SQLiteStoreTests {
    func workload(_ id: String, tenant: String = "t1", queue: String = "default") -> Workload {
        Workload(id: id, tenant: tenant, owner: "u", spec: WorkloadSpec(queue: queue, command: ["true"]), createdAt: Date())
    }

    @Test("acknowledged writes use WAL with synchronous=FULL")
    func durability() throws {
        let dir = try makeTempDir()
        let store = try SQLiteStore(path: dir + "/db.sqlite")
        #expect(try store.synchronousLevel() == 2)
        #expect(FileManager.default.fileExists(atPath: dir + "/db.sqlite-wal"))
    }

    @Test("many concurrent inserts are all stored, with distinct sequence numbers")
    func concurrentInserts() async throws {
        let dir = try makeTempDir()
        let store = try SQLiteStore(path: dir + "/db.sqlite")
        let stored = try await withThrowingTaskGroup(of: Workload.self) { group in
            for i in 0..<300 { group.addTask { try await store.insert(workload("w\(i)")) } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(Set(stored.map(\.seq)).count == 300)
        #expect(try await store.workloads(WorkloadQuery(limit: 1000)).count == 300)
        // Reopening the file finds them all and continues the sequence.
        let again = try SQLiteStore(path: dir + "/db.sqlite")
        #expect(try await again.activeWorkloads().count == 300)
        let next = try await again.insert(workload("after"))
        #expect(next.seq == 301)
    }

    @Test("listing pages newest first with a cursor, and filters by tenant, queue and phase")
    func listing() async throws {
        let store = try SQLiteStore(path: try makeTempDir() + "/db.sqlite")
        for i in 0..<25 { _ = try await store.insert(workload("a\(i)", tenant: i % 2 == 0 ? "t1" : "t2", queue: i < 5 ? "gpu" : "default")) }
        let first = try await store.workloads(WorkloadQuery(limit: 10))
        #expect(first.map(\.seq) == Array((16...25).reversed()).map(Int64.init))
        let second = try await store.workloads(WorkloadQuery(beforeSeq: first.last!.seq, limit: 10))
        #expect(second.first!.seq == 15)
        #expect(try await store.workloads(WorkloadQuery(tenant: "t2", limit: 100)).allSatisfy { $0.tenant == "t2" })
        #expect(try await store.workloads(WorkloadQuery(queue: "gpu", limit: 100)).count == 5)
        var w = first[0]
        w.move(to: .cancelled, at: Date())
        w.version += 1
        try await store.update([w])
        #expect(try await store.workloads(WorkloadQuery(phases: [.cancelled])).map(\.id) == [w.id])
        #expect(try await store.activeWorkloads().count == 24)
    }

    @Test("kinds, names, labels (dots in their keys too) and apps are filtered, counted and paged in the store")
    func filtersAndCounts() async throws {
        let store = try SQLiteStore(path: try makeTempDir() + "/db.sqlite")
        for i in 0..<30 {
            var spec = WorkloadSpec(name: "n\(i % 3)", kind: i % 2 == 0 ? .interactive : .batch, command: ["true"])
            if i % 5 == 0 { spec.labels = ["dataforest.workspace": "ws\(i % 10)", "plain": "x"] }
            if i % 4 == 0 { spec.app = "jupyter" }
            _ = try await store.insert(Workload(id: "w\(i)", tenant: i < 20 ? "t1" : "t2", owner: "u", spec: spec, createdAt: Date()))
        }
        let interactive = WorkloadQuery(tenant: "t1", limit: 100, kind: .interactive)
        #expect(try await store.countWorkloads(interactive) == 10)
        #expect(try await store.workloads(interactive).allSatisfy { $0.spec.kind == .interactive && $0.tenant == "t1" })
        var named = interactive
        named.names = ["n0", "n1"]
        let expected = (0..<20).filter { $0 % 2 == 0 && $0 % 3 != 2 }.count
        #expect(try await store.countWorkloads(named) == expected)
        #expect(try await store.countWorkloads(WorkloadQuery(limit: 1, labels: ["dataforest.workspace": "ws0"])) == 3)
        #expect(try await store.countWorkloads(WorkloadQuery(limit: 1, labels: ["dataforest.workspace": "ws5", "plain": "x"])) == 3)
        #expect(try await store.countWorkloads(WorkloadQuery(limit: 1, labels: ["dataforest.workspace\"": "ws0"])) == 3, "a quote in a key is dropped, not SQL")
        #expect(try await store.countWorkloads(WorkloadQuery(limit: 1, labels: ["dataforest": "ws0"])) == 0)
        #expect(try await store.countWorkloads(WorkloadQuery(limit: 1, app: .named("jupyter"))) == 8)
        #expect(try await store.countWorkloads(WorkloadQuery(limit: 1, app: WorkloadQuery.AppFilter.none)) == 22)
        // Pages: offset and limit newest first, or oldest first; the count ignores both.
        let page = try await store.workloads(WorkloadQuery(tenant: "t1", limit: 5, offset: 5))
        #expect(page.map(\.id) == (10...14).reversed().map { "w\($0)" })
        let oldest = try await store.workloads(WorkloadQuery(tenant: "t1", limit: 3, oldestFirst: true))
        #expect(oldest.map(\.id) == ["w0", "w1", "w2"])
        #expect(try await store.countWorkloads(WorkloadQuery(tenant: "t1", limit: 5, offset: 5)) == 20)
        #expect(try await store.workloads(WorkloadQuery(tenant: "t1", limit: 5, offset: 100)).isEmpty)
    }

    @Test("a stale update never overwrites a newer state")
    func versions() async throws {
        let store = try SQLiteStore(path: try makeTempDir() + "/db.sqlite")
        var w = try await store.insert(workload("v"))
        var newer = w
        newer.move(to: .cancelled, at: Date())
        newer.version = 5
        try await store.update([newer])
        w.version = 3
        w.reason = Reason(.queued, "stale")
        try await store.update([w])
        let read = try await store.workload(id: "v")
        #expect(read?.phase == .cancelled && read?.version == 5)
    }

    @Test("queues and tokens are stored")
    func queuesAndTokens() async throws {
        let store = try SQLiteStore(path: try makeTempDir() + "/db.sqlite")
        try await store.save(queue: Queue(name: "gpu", priority: 10))
        #expect(try await store.queues().map(\.name) == ["gpu"])
        try await store.deleteQueue(name: "gpu")
        #expect(try await store.queues().isEmpty)
        try await store.save(token: TokenRecord(id: "k", hash: "h", principal: Principal(user: "u", tenant: "t", role: .user), description: ""))
        #expect(try await store.tokens().first?.principal.user == "u")
    }
}

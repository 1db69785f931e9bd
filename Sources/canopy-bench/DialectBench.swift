import CanopyCore
import CanopySQLite
import Foundation

/// The SCNet dialect against a server holding a tenant's history of instances, with the native API's figures for
/// the same questions as the baseline, measured in the same run.
enum DialectBench {
    static func scnet(count: Int) async throws {
        let dir = try temporaryDirectory("scnet")
        // Finished instances of one tenant straight into the store: a third each Completed, Failed and Terminated,
        // a hundred names, half of them with SCNet's extension.
        do {
            let store = try SQLiteStore(path: dir + "/canopy.sqlite")
            let now = Date()
            let ends: [Phase] = [.succeeded, .failed, .cancelled]
            for base in stride(from: 0, to: count, by: 2000) {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for n in base..<min(count, base + 2000) {
                        group.addTask {
                            var w = Workload(
                                id: IDGenerator.random(), tenant: "lab", owner: "alice",
                                spec: WorkloadSpec(name: "inst-\(n % 100)", kind: .interactive, command: WorkloadSpec.waitForever, lease: .seconds(3600)),
                                createdAt: now.addingTimeInterval(Double(n - count)))
                            if n % 2 == 0 { w.extensions = ["scnet": ["instance": #"{"taskType":"ssh","resourceGroup":"default"}"#]] }
                            // Through the phases the state machine allows, to the end, as the history run seeds.
                            let path: [Phase] = ends[n % 3] == .succeeded ? [.starting, .running, .succeeded] : [ends[n % 3]]
                            for next in path where !w.move(to: next, at: w.createdAt.addingTimeInterval(1)) {
                                throw BenchError("seed: the state machine refused \(w.phase.rawValue) -> \(next.rawValue)")
                            }
                            w.version = 3
                            _ = try await store.insert(w)
                        }
                    }
                    try await group.waitForAll()
                }
            }
        }
        let server = try ServerUnderTest(dataDir: dir)
        defer { server.stop() }
        let admin = try server.client()
        let made = try admin.request("POST", "/api/v1/users", body: #"{"user": "alice", "tenant": "lab", "password": "bench-password"}"#)
        guard made.status == 201 else { throw BenchError("users: \(made.status) \(made.text)") }
        let org = try orgID(admin)

        // Sign-in: scrypt by design (tens of ms); the native API has no password to compare with.
        var signIns: [Double] = []
        var token = ""
        let client = try server.client()
        for _ in 0..<10 {
            let t0 = monotonicNow()
            let r = try client.request("POST", "/ac/openapi/v2/tokens", headers: [("user", "alice"), ("password", "bench-password"), ("orgId", org)])
            signIns.append(monotonicNow() - t0)
            guard r.status == 200, let t = tokenOf(r.body) else { throw BenchError("sign-in: \(r.status) \(r.text)") }
            token = t
        }
        // Authenticating a request: a JWT checked against its password, and Canopy's bearer token.
        func times(_ n: Int, _ call: () throws -> BlockingHTTPClient.Response) throws -> [Double] {
            var samples: [Double] = []
            for k in 0..<(n + 20) {
                let t0 = monotonicNow()
                let r = try call()
                guard r.status == 200 else { throw BenchError("\(r.status) \(r.text.prefix(200))") }
                if k >= 20 { samples.append(monotonicNow() - t0) }
            }
            return samples
        }
        let jwt = try times(500) { try client.request("GET", "/ac/openapi/v2/tokens/state", headers: [("token", token)]) }
        let bearer = try times(500) { try admin.request("GET", "/api/v1/whoami") }
        // A page of a tenant's instances by state, by name, and far in: in the store, with its total.
        func list(_ body: String) throws -> [Double] {
            try times(200) { try client.request("GET", "/ai/openapi/v2/instance-service/task", body: body, headers: [("token", token)]) }
        }
        let byState = try list(#"{"limit": 20, "start": 0, "sort": "desc", "status": "Terminated"}"#)
        let byName = try list(#"{"limit": 20, "start": 0, "sort": "desc", "instanceServiceName": ["inst-7"]}"#)
        let deep = try list(#"{"limit": 20, "start": \#(count / 2), "sort": "desc"}"#)
        let native = try times(200) { try admin.request("GET", "/api/v1/workloads?limit=20&phase=Cancelled&tenant=lab") }
        let check = try client.request(
            "GET", "/ai/openapi/v2/instance-service/task", body: #"{"limit": 1, "status": "Terminated"}"#,
            headers: [("token", token)])
        let total = ((try? JSONSerialization.jsonObject(with: Data(check.body)) as? [String: Any])?["data"] as? [String: Any])?["total"] as? Int ?? -1
        guard total == (0..<count).filter({ $0 % 3 == 2 }).count else { throw BenchError("the Terminated total is \(total)") }

        func ms(_ samples: [Double], _ q: Double) -> Double { quantile(samples, q) * 1000 }
        say(String(format: "scnet     %d instances of one tenant; sign-in (scrypt)      p50 %.1f ms", count, ms(signIns, 0.5)))
        say(
            String(
                format:
                    "scnet     tokens/state (JWT + password check)             p50 %.2f ms  p99 %.2f ms   baseline native whoami (bearer) p50 %.2f ms  p99 %.2f ms",
                ms(jwt, 0.5), ms(jwt, 0.99), ms(bearer, 0.5), ms(bearer, 0.99)))
        say(
            String(
                format:
                    "scnet     list 20 by state (total %d)                  p50 %.1f ms  p99 %.1f ms   baseline native list 20 by phase p50 %.1f ms  p99 %.1f ms",
                total, ms(byState, 0.5), ms(byState, 0.99), ms(native, 0.5), ms(native, 0.99)))
        say(String(format: "scnet     list 20 by name                                 p50 %.1f ms  p99 %.1f ms", ms(byName, 0.5), ms(byName, 0.99)))
        say(String(format: "scnet     list 20 from start=%d                        p50 %.1f ms  p99 %.1f ms", count / 2, ms(deep, 0.5), ms(deep, 0.99)))
        let memory = server.memory()
        say(String(format: "scnet     server RSS                                      %.1f MiB (peak %.1f MiB)", memory.rss, memory.peak))
    }

    static func orgID(_ admin: BlockingHTTPClient) throws -> String {
        let r = try admin.request("GET", "/api/v1/tenants")
        let items = (try? JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any])?["items"] as? [[String: Any]] ?? []
        guard let id = items.first(where: { $0["name"] as? String == "lab" })?["id"] as? String else { throw BenchError("no org id for lab: \(r.text)") }
        return id
    }

    static func tokenOf(_ body: [UInt8]) -> String? {
        let data = (try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any])?["data"] as? [[String: Any]]
        return data?.last?["token"] as? String
    }
}

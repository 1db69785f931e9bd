import CanopyApp
import CanopyCore
import CanopyTesting
import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

/// Interactive workloads through the native API: stop to Stopped, restart, leases within a queue's cap, and the
/// refusals in the API's own error shape.
@Suite("interactive workloads through the native API")
struct InteractiveAPITests {
    static func errorField(_ body: [String: Any]) -> String? { (body["error"] as? [String: Any])?["field"] as? String }

    @Test("stop keeps the files, restart runs it again with them; leases: default, cap, extension; refusals are 4xx naming the field")
    func lifecycle() async throws {
        let dir = try makeTempDir("canopy-interactive")
        try await withServer(try testConfiguration(dataDir: dir)) { server, client in
            let admin = server.adminToken
            let (_, a) = try await client.json("/api/v1/tokens", .post, token: admin, body: ["user": "alice", "tenant": "team-a"])
            let (_, a2) = try await client.json("/api/v1/tokens", .post, token: admin, body: ["user": "ann", "tenant": "team-a"])
            let (_, b) = try await client.json("/api/v1/tokens", .post, token: admin, body: ["user": "bob", "tenant": "team-b"])
            let alice = try #require(a["token"] as? String)
            let ann = try #require(a2["token"] as? String)
            let bob = try #require(b["token"] as? String)
            // A queue with a default and a cap.
            let (qs, q) = try await client.json(
                "/api/v1/queues", .post, token: admin, body: ["name": "dev", "defaultLease": "2h", "maxLease": "8h"])
            #expect(qs == .created && q["maxLeaseSeconds"] as? Int == 8 * 3600, "\(q)")

            // Beyond the cap, unlimited under a cap, a lease on a batch workload: 400 naming the field.
            for (body, field) in [
                (["kind": "interactive", "queue": "dev", "lease": "9h", "command": ["true"]] as [String: Any], "lease"),
                (["kind": "interactive", "queue": "dev", "lease": "unlimited", "command": ["true"]], "lease"),
                (["lease": "1h", "command": ["true"]], "lease"),
                (["kind": "interactive", "lease": "soon", "command": ["true"]], "lease"),
                // A lease past ten years (the largest integer: it used to overflow once extended) is refused.
                (["kind": "interactive", "lease": Int.max, "command": ["true"]], "lease"),
                // The idle probe: interactive only, a program named, bounded, no NUL.
                (["idleProbe": ["true"], "command": ["true"]], "idleProbe"),
                (["kind": "interactive", "idleProbe": [] as [String], "command": ["true"]], "idleProbe"),
                (["kind": "interactive", "idleProbe": [""], "command": ["true"]], "idleProbe"),
                (["kind": "interactive", "idleProbe": ["sh", "a\u{0}b"], "command": ["true"]], "idleProbe"),
                (["kind": "interactive", "idleProbe": Array(repeating: "x", count: 65), "command": ["true"]], "idleProbe"),
                (["kind": "interactive", "idleProbe": ["x", String(repeating: "y", count: 1025)], "command": ["true"]], "idleProbe"),
            ] {
                let (status, err) = try await client.json("/api/v1/workloads", .post, token: alice, body: body)
                #expect(status == .badRequest && Self.errorField(err) == field, "\(body): \(status) \(err)")
            }

            // The queue's default lease, counted from the start.
            let (status, created) = try await client.json(
                "/api/v1/workloads", .post, token: alice,
                body: ["kind": "interactive", "queue": "dev", "command": ["sh", "-c", "echo kept >> notes.txt; cat .canopy/lease; sleep 300"]])
            #expect(status == .created, "\(created)")
            let id = try #require(created["id"] as? String)
            #expect((created["spec"] as? [String: Any])?["lease"] as? Int == 2 * 3600)
            let running = try await client.waitForPhase(id, token: alice, ["Running"])
            #expect(running["leaseExpiresAt"] != nil, "\(running)")

            // Extension within the cap; past it; the wrong shape; another tenant; a colleague who does not own it.
            let (okStatus, extended) = try await client.json("/api/v1/workloads/\(id)/lease", .post, token: alice, body: ["extend": "1h"])
            #expect(okStatus == .ok, "\(extended)")
            let (tooFar, tooFarErr) = try await client.json("/api/v1/workloads/\(id)/lease", .post, token: alice, body: ["extend": "8h"])
            #expect(tooFar == .badRequest && Self.errorField(tooFarErr) == "extend", "\(tooFarErr)")
            for body in [["extend": Int.max], ["until": "9999-12-31T00:00:00Z"]] as [[String: Any]] {
                let (huge, hugeErr) = try await client.json("/api/v1/workloads/\(id)/lease", .post, token: admin, body: body)
                #expect(huge == .badRequest, "\(body): \(huge) \(hugeErr)")
            }
            let (twoFields, _) = try await client.json("/api/v1/workloads/\(id)/lease", .post, token: alice, body: ["extend": "1h", "unlimited": true])
            #expect(twoFields == .badRequest)
            #expect(try await client.json("/api/v1/workloads/\(id)/lease", .post, token: bob, body: ["extend": "1h"]).0 == .notFound)
            #expect(try await client.json("/api/v1/workloads/\(id)/restart", .post, token: bob).0 == .notFound)
            #expect(try await client.json("/api/v1/workloads/\(id)/lease", .post, token: ann, body: ["extend": "1h"]).0 == .forbidden)
            // Restarting what runs is a conflict.
            #expect(try await client.json("/api/v1/workloads/\(id)/restart", .post, token: alice).0 == .conflict)

            // Stop: Stopped, not Cancelled; restart: running again, the same working directory. (The first run has
            // written its line before it is stopped: a fast machine gets here within milliseconds of its start.)
            let notes = dir + "/workloads/\(id)/task-0/work/notes.txt"
            #expect(try await eventually { ((try? String(contentsOfFile: notes, encoding: .utf8)) ?? "") == "kept\n" })
            _ = try await client.json("/api/v1/workloads/\(id)/stop", .post, token: alice)
            let stopped = try await client.waitForPhase(id, token: alice, ["Stopped"])
            #expect(stopped["phase"] as? String == "Stopped")
            let (rs, restarted) = try await client.json("/api/v1/workloads/\(id)/restart", .post, token: alice)
            #expect(rs == .ok && restarted["restarts"] as? Int == 1, "\(restarted)")
            _ = try await client.waitForPhase(id, token: alice, ["Running"])
            #expect(try await eventually { ((try? String(contentsOfFile: notes, encoding: .utf8)) ?? "") == "kept\nkept\n" }, "the files stayed")
            let log = dir + "/workloads/\(id)/task-0/stdout.log"
            #expect(try await eventually { ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("expires=") }, "the task reads its lease")

            // A batch workload has no lease to change.
            let (_, batch) = try await client.json("/api/v1/workloads", .post, token: alice, body: ["command": ["sleep", "30"]])
            let batchID = try #require(batch["id"] as? String)
            #expect(try await client.json("/api/v1/workloads/\(batchID)/lease", .post, token: alice, body: ["extend": "1h"]).0 == .conflict)
            _ = try await client.json("/api/v1/workloads/\(batchID)/stop", .post, token: alice)
            _ = try await client.json("/api/v1/workloads/\(id)/stop", .post, token: alice)
            _ = try await client.waitForPhase(id, token: alice, ["Stopped"])
        }
    }
}

import CanopyApp
import CanopyCore
import CanopyTesting
import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

@Suite("native API through the application")
struct NativeAPITests {
    @Test("the smallest body runs a workload to Succeeded; healthz needs no token")
    func smallest() async throws {
        try await withServer { server, client in
            try await client.execute(uri: "/healthz", method: .get) { #expect($0.status == .ok) }
            let (status, w) = try await client.json("/api/v1/workloads", .post, token: server.adminToken, body: ["command": ["true"]])
            #expect(status == .created)
            let id = try #require(w["id"] as? String)
            #expect(w["phase"] != nil)
            let done = try await client.waitForPhase(id, token: server.adminToken, ["Succeeded"])
            #expect(done["exitCode"] as? Int == 0)
            let tasks = done["tasks"] as? [[String: Any]]
            #expect(tasks?.first?["phase"] as? String == "Succeeded")
        }
    }

    @Test("authentication: no token or a wrong one gets 401 in the API's error shape")
    func unauthenticated() async throws {
        try await withServer { server, client in
            try await client.execute(uri: "/api/v1/workloads", method: .get) { r in
                #expect(r.status == .unauthorized)
                #expect((TestJSON.object(r.body)["error"] as? [String: Any])?["code"] as? String == "Unauthenticated")
            }
            let (status, _) = try await client.json("/api/v1/workloads", token: "cnp_wrong")
            #expect(status == .unauthorized)
        }
    }

    static let badBodies: [(String, String, String?)] = [
        ("{not json", "InvalidArgument", nil),
        ("[1,2]", "InvalidArgument", nil),
        ("{}", "InvalidArgument", "command"),
        (#"{"command": "true"}"#, "InvalidArgument", "command"),
        (#"{"command": []}"#, "InvalidArgument", "command"),
        (#"{"command": ["true"], "tasks": 0}"#, "InvalidArgument", "tasks"),
        (#"{"command": ["true"], "tasks": "two"}"#, "InvalidArgument", "tasks"),
        (#"{"command": ["true"], "resources": {"cpu": -1}}"#, "InvalidArgument", "resources.cpu"),
        (#"{"command": ["true"], "resources": {"cpu": 0}}"#, "InvalidArgument", "resources.cpu"),
        (#"{"command": ["true"], "resources": {"memory": "lots"}}"#, "InvalidArgument", "resources.memory"),
        (#"{"command": ["true"], "resources": {"gpus": -2}}"#, "InvalidArgument", "resources.gpus"),
        (#"{"command": ["true"], "resources": {"gpus": 99}}"#, "Unschedulable", "resources.gpus"),
        (#"{"command": ["true"], "resources": {"gpus": 1, "gpuModel": "H100"}}"#, "Unschedulable", "resources.gpuModel"),
        (#"{"command": ["true"], "resources": {"cpu": 10000}}"#, "Unschedulable", "resources.cpu"),
        (#"{"command": ["true"], "resources": {"memory": "100Ti"}}"#, "Unschedulable", "resources.memory"),
        (#"{"command": ["true"], "tasks": 3, "resources": {"gpus": 1}}"#, "Unschedulable", "tasks"),
        (#"{"command": ["true"], "queue": "nope"}"#, "InvalidArgument", "queue"),
        (#"{"command": ["true"], "maxDuration": "forever"}"#, "InvalidArgument", "maxDuration"),
        (#"{"command": ["true"], "priority": 99999999999}"#, "InvalidArgument", "priority"),
        (#"{"command": ["true"], "gpu": 1}"#, "InvalidArgument", "gpu"),
        (#"{"command": ["true"], "env": {"1BAD": "x"}}"#, "InvalidArgument", "env.1BAD"),
        (#"{"command": ["true"], "env": {"A;echo x;B": "x"}}"#, "InvalidArgument", "env.A;echo x;B"),
        (#"{"command": ["true"], "env": {"A B": "x"}}"#, "InvalidArgument", "env.A B"),
        (#"{"command": ["true"], "env": {"A": 5}}"#, "InvalidArgument", "env.A"),
        (#"{"command": ["true"], "ports": [70000]}"#, "InvalidArgument", "ports[0]"),
        (#"{"command": ["true"], "hold": "yes"}"#, "InvalidArgument", "hold"),
        (#"{"command": null}"#, "InvalidArgument", "command"),
    ]

    @Test("bad input gets a 4xx with a stable code and the offending field, never a 5xx")
    func badInput() async throws {
        try await withServer { server, client in
            for (body, code, field) in Self.badBodies {
                try await client.execute(uri: "/api/v1/workloads", method: .post, headers: authHeaders(server.adminToken), body: ByteBuffer(string: body)) { r in
                    let error = TestJSON.object(r.body)["error"] as? [String: Any]
                    #expect((400..<500).contains(r.status.code), "\(body) -> \(r.status)")
                    #expect(error?["code"] as? String == code, "\(body) -> \(error ?? [:])")
                    #expect(error?["field"] as? String == field, "\(body) -> \(error ?? [:])")
                    #expect((error?["message"] as? String)?.isEmpty == false)
                }
            }
            // A huge body is refused before it is read.
            let huge = ByteBuffer(string: #"{"command": ["echo", ""# + String(repeating: "x", count: 2 << 20) + #""]}"#)
            try await client.execute(uri: "/api/v1/workloads", method: .post, headers: authHeaders(server.adminToken), body: huge) { r in
                #expect(r.status == .contentTooLarge)
            }
            for uri in ["/api/v1/workloads?limit=0", "/api/v1/workloads?limit=abc", "/api/v1/workloads?cursor=-4", "/api/v1/workloads?phase=Sleeping",
                        "/api/v1/workloads/nope/tasks/x/logs", "/api/v1/nosuchthing"] {
                let (status, body) = try await client.json(uri, token: server.adminToken)
                #expect((400..<500).contains(status.code), "\(uri) -> \(status)")
                #expect(body["error"] != nil)
            }
            // Nothing was stored by any of it.
            let (_, page) = try await client.json("/api/v1/workloads", token: server.adminToken)
            #expect((page["items"] as? [Any])?.isEmpty == true)
        }
    }

    @Test("another tenant's workload looks exactly like a missing one")
    func tenants() async throws {
        try await withServer { server, client in
            let (_, a) = try await client.json("/api/v1/tokens", .post, token: server.adminToken, body: ["user": "alice", "tenant": "team-a"])
            let (_, b) = try await client.json("/api/v1/tokens", .post, token: server.adminToken, body: ["user": "bob", "tenant": "team-b"])
            let alice = try #require(a["token"] as? String), bob = try #require(b["token"] as? String)
            let (_, w) = try await client.json("/api/v1/workloads", .post, token: alice, body: ["command": ["sleep", "5"]])
            let id = try #require(w["id"] as? String)
            #expect(w["tenant"] as? String == "team-a" && w["owner"] as? String == "alice")
            let (theirs, theirBody) = try await client.json("/api/v1/workloads/\(id)", token: bob)
            let (missing, missingBody) = try await client.json("/api/v1/workloads/ZZZZZZZZZZZZZZZZZZZZZZ", token: bob)
            #expect(theirs == .notFound && missing == .notFound)
            #expect((theirBody["error"] as? [String: Any])?["code"] as? String == (missingBody["error"] as? [String: Any])?["code"] as? String)
            #expect(try await client.json("/api/v1/workloads/\(id)/stop", .post, token: bob).0 == .notFound)
            #expect(try await client.json("/api/v1/workloads/\(id)/tasks/0/logs", token: bob).0 == .notFound)
            let (_, bobList) = try await client.json("/api/v1/workloads", token: bob)
            #expect((bobList["items"] as? [Any])?.isEmpty == true)
            // Users cannot mint tokens or queues.
            #expect(try await client.json("/api/v1/tokens", .post, token: bob, body: ["user": "mallory"]).0 == .forbidden)
            #expect(try await client.json("/api/v1/queues", .post, token: bob, body: ["name": "mine"]).0 == .forbidden)
            _ = try await client.json("/api/v1/workloads/\(id)/stop", .post, token: alice)
        }
    }

    @Test("held workloads are Pending with reason Held and a queue position until released")
    func holdAndRelease() async throws {
        try await withServer { server, client in
            let t = server.adminToken
            var ids: [String] = []
            for _ in 0..<3 {
                let (_, w) = try await client.json("/api/v1/workloads", .post, token: t, body: ["command": ["true"], "hold": true])
                ids.append(try #require(w["id"] as? String))
            }
            let (_, third) = try await client.json("/api/v1/workloads/\(ids[2])", token: t)
            #expect(third["phase"] as? String == "Pending")
            #expect((third["reason"] as? [String: Any])?["code"] as? String == "Held")
            #expect(third["queuePosition"] as? Int == 3)
            let (status, released) = try await client.json("/api/v1/workloads/\(ids[0])/release", .post, token: t)
            #expect(status == .ok && (released["spec"] as? [String: Any])?["hold"] as? Bool == false)
            _ = try await client.waitForPhase(ids[0], token: t, ["Succeeded"])
            let (_, moved) = try await client.json("/api/v1/workloads/\(ids[2])", token: t)
            #expect(moved["queuePosition"] as? Int == 2)
            #expect(try await client.json("/api/v1/workloads/\(ids[0])/release", .post, token: t).0 == .conflict)
            let (_, cancelled) = try await client.json("/api/v1/workloads/\(ids[1])/stop", .post, token: t)
            #expect(cancelled["phase"] as? String == "Cancelled")
        }
    }

    @Test("a workload waiting for GPUs says what it waits for")
    func pendingReason() async throws {
        try await withServer { server, client in
            let t = server.adminToken
            let (_, hog) = try await client.json("/api/v1/workloads", .post, token: t, body: ["command": ["sleep", "30"], "resources": ["gpus": 1]])
            _ = try await client.waitForPhase(hog["id"] as! String, token: t, ["Running"])
            let (_, w) = try await client.json("/api/v1/workloads", .post, token: t, body: ["command": ["true"], "resources": ["gpus": 2]])
            let id = w["id"] as! String
            var reason: [String: Any] = [:]
            _ = try await eventually {
                reason = (try await client.json("/api/v1/workloads/\(id)", token: t).1["reason"] as? [String: Any]) ?? [:]
                return reason["code"] as? String == "InsufficientResources"
            }
            #expect(reason["message"] as? String == "waiting for 2 GPUs: 1 of 2 free on node local")
            let (_, nodes) = try await client.json("/api/v1/nodes", token: t)
            let node = (nodes["items"] as? [[String: Any]])?.first
            #expect(node?["allocatedGPUs"] as? [Int] == [0])
            _ = try await client.json("/api/v1/workloads/\(hog["id"] as! String)/stop", .post, token: t)
            let done = try await client.waitForPhase(id, token: t, ["Succeeded"])
            #expect(done["phase"] as? String == "Succeeded")
            #expect((done["tasks"] as? [[String: Any]])?.first?["gpus"] as? [Int] == [0, 1], "\(done)")
        }
    }

    @Test("listing pages with a cursor and filters by phase and queue")
    func listing() async throws {
        try await withServer { server, client in
            let t = server.adminToken
            #expect(try await client.json("/api/v1/queues", .post, token: t, body: ["name": "batch", "priority": 5]).0 == .created)
            for i in 0..<7 { _ = try await client.json("/api/v1/workloads", .post, token: t, body: ["command": ["true"], "hold": true, "queue": i < 2 ? "batch" : "default"]) }
            let (_, p1) = try await client.json("/api/v1/workloads?limit=3", token: t)
            let cursor = try #require(p1["nextCursor"] as? String)
            let (_, p2) = try await client.json("/api/v1/workloads?limit=3&cursor=\(cursor)", token: t)
            let (_, p3) = try await client.json("/api/v1/workloads?limit=3&cursor=\(p2["nextCursor"] as! String)", token: t)
            let all = [p1, p2, p3].flatMap { ($0["items"] as? [[String: Any]] ?? []).map { $0["id"] as! String } }
            #expect(all.count == 7 && Set(all).count == 7)
            #expect(p3["nextCursor"] == nil)
            #expect(((try await client.json("/api/v1/workloads?queue=batch", token: t).1)["items"] as? [Any])?.count == 2)
            #expect(((try await client.json("/api/v1/workloads?phase=Running,Succeeded", token: t).1)["items"] as? [Any])?.count == 0)
            let (_, queues) = try await client.json("/api/v1/queues", token: t)
            let batch = (queues["items"] as? [[String: Any]])?.first { $0["name"] as? String == "batch" }
            #expect(batch?["pending"] as? Int == 2 && batch?["priority"] as? Int == 5)
            #expect(try await client.json("/api/v1/queues/batch", .delete, token: t).0 == .conflict)
        }
    }

    @Test("task logs: whole, from an offset, and followed until the task ends")
    func logs() async throws {
        try await withServer { server, client in
            let t = server.adminToken
            let (_, w) = try await client.json("/api/v1/workloads", .post, token: t, body: ["command": ["sh", "-c", "echo one; sleep 0.3; echo two; echo bad >&2"]])
            let id = w["id"] as! String
            try await client.execute(uri: "/api/v1/workloads/\(id)/tasks/0/logs?follow=true", method: .get, headers: authHeaders(t)) { r in
                #expect(r.status == .ok)
                #expect(String(buffer: r.body) == "one\ntwo\n")
            }
            try await client.execute(uri: "/api/v1/workloads/\(id)/tasks/0/logs?offset=4", method: .get, headers: authHeaders(t)) { r in
                #expect(String(buffer: r.body) == "two\n")
            }
            try await client.execute(uri: "/api/v1/workloads/\(id)/tasks/0/logs?stream=stderr", method: .get, headers: authHeaders(t)) { r in
                #expect(String(buffer: r.body) == "bad\n")
            }
            #expect(try await client.json("/api/v1/workloads/\(id)/tasks/1/logs", token: t).0 == .notFound)
        }
    }

    @Test("a gang whose task fails stops its peers and fails as a whole")
    func gangFailure() async throws {
        try await withServer { server, client in
            let t = server.adminToken
            let (_, w) = try await client.json(
                "/api/v1/workloads", .post, token: t,
                body: ["command": ["sh", "-c", "if [ $CANOPY_TASK_INDEX = 1 ]; then exit 9; fi; sleep 30"], "tasks": 2, "resources": ["cpu": 0.5]])
            let done = try await client.waitForPhase(w["id"] as! String, token: t, ["Failed"])
            #expect(done["exitCode"] as? Int == 9)
            #expect((done["reason"] as? [String: Any])?["message"] as? String == "task 1 exited with code 9")
            let tasks = done["tasks"] as? [[String: Any]] ?? []
            #expect(tasks.map { $0["phase"] as? String } == ["Cancelled", "Failed"])
        }
    }

    @Test("a stop that comes right after the submission, while the tasks are being launched, still stops them")
    func stopDuringLaunch() async throws {
        try await withServer { server, client in
            let t = server.adminToken
            var ids: [String] = []
            for _ in 0..<8 {
                let (_, w) = try await client.json(
                    "/api/v1/workloads", .post, token: t, body: ["command": ["sleep", "60"], "tasks": 2, "resources": ["cpu": 0.1, "memory": "64Mi"]])
                let id = try #require(w["id"] as? String)
                let (status, _) = try await client.json("/api/v1/workloads/\(id)/stop", .post, token: t)
                #expect(status == .ok)
                ids.append(id)
            }
            for id in ids {
                let done = try await client.waitForPhase(id, token: t, ["Cancelled", "Failed", "Succeeded"])
                #expect(done["phase"] as? String == "Cancelled", "\(done)")
                let tasks = done["tasks"] as? [[String: Any]] ?? []
                #expect(tasks.allSatisfy { $0["phase"] as? String == "Cancelled" }, "\(tasks)")
            }
        }
    }

    @Test("every operation in the OpenAPI document is served by the router")
    func openAPI() async throws {
        try await withServer { server, client in
            let doc = try await client.execute(uri: "/api/v1/openapi.json", method: .get) { TestJSON.object($0.body) }
            #expect(doc["openapi"] as? String == "3.0.3")
            let paths = try #require(doc["paths"] as? [String: [String: Any]])
            #expect(paths.count >= 10)
            for (path, ops) in paths {
                for method in ops.keys {
                    let uri = "/api/v1" + path.replacingOccurrences(of: "{id}", with: "ZZZZ").replacingOccurrences(of: "{index}", with: "0")
                        .replacingOccurrences(of: "{name}", with: "nosuch")
                    let m = HTTPRequest.Method(rawValue: method.uppercased())!
                    let (status, body) = try await client.json(uri, m, token: server.adminToken, body: m == .post ? [:] : nil)
                    // A route that exists answers with its own validation or lookup error, never "no route".
                    let message = (body["error"] as? [String: Any])?["message"] as? String ?? ""
                    #expect(status.code < 500, "\(method) \(path)")
                    #expect(!(status == .notFound && message == "no such resource"), "\(method) \(path) is documented but not routed")
                }
            }
        }
    }
}

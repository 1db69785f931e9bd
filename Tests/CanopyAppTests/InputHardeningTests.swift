import CanopyApp
import CanopyCore
import CanopyTesting
import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

/// Findings of a probe of a live server: input that trapped, slipped through, or disagreed with the OpenAPI document.
@Suite("native API input hardening through the application")
struct InputHardeningTests {
    /// Sends a raw body and returns the status and the error object.
    static func send(
        _ client: any TestClientProtocol, _ uri: String, _ method: HTTPRequest.Method = .post, token: String, raw body: String? = nil
    ) async throws -> (HTTPResponse.Status, [String: Any]) {
        try await client.execute(uri: uri, method: method, headers: authHeaders(token), body: body.map { ByteBuffer(string: $0) }) { r in
            (r.status, TestJSON.object(r.body)["error"] as? [String: Any] ?? [:])
        }
    }

    static let extremeBodies: [(String, String)] = [
        (#"{"command": ["true"], "priority": -9223372036854775808}"#, "priority"),
        (#"{"command": ["true"], "priority": 9223372036854775807}"#, "priority"),
        (#"{"command": ["true"], "priority": 9223372036854775808}"#, "priority"),
        (#"{"command": ["true"], "priority": 1.5}"#, "priority"),
        (#"{"command": ["true"], "tasks": -9223372036854775808}"#, "tasks"),
        (#"{"command": ["true"], "tasks": 9223372036854775807}"#, "tasks"),
        (#"{"command": ["true"], "ports": [-9223372036854775808]}"#, "ports[0]"),
        (#"{"command": ["true"], "maxDuration": -9223372036854775808}"#, "maxDuration"),
        (#"{"command": ["true"], "maxDuration": "9999999999999999999d"}"#, "maxDuration"),
        (#"{"command": ["true"], "resources": {"gpus": -9223372036854775808}}"#, "resources.gpus"),
        (#"{"command": ["true"], "resources": {"gpus": 9223372036854775807}}"#, "resources.gpus"),
        (#"{"command": ["true"], "resources": {"cpu": 1e308}}"#, "resources.cpu"),
        (#"{"command": ["true"], "resources": {"memory": 1e308}}"#, "resources.memory"),
        // A staging path whose name no file system takes: refused at submit, not after the run.
        (#"{"command": ["true"], "data": {"outputs": [{"path": "\#(String(repeating: "x", count: 300))", "destination": "/o"}]}}"#, "data.outputs[0].path"),
        (#"{"command": ["true"], "data": {"inputs": [{"source": "/i", "path": "a/\#(String(repeating: "y", count: 256))"}]}}"#, "data.inputs[0].path"),
        // Ambiguous lowercase units: refused, not guessed.
        (#"{"command": ["true"], "resources": {"memory": "512m"}}"#, "resources.memory"),
        (#"{"command": ["true"], "resources": {"memory": "2g"}}"#, "resources.memory"),
    ]

    @Test("extreme numbers in a body or a query get a 400 naming the field, never a trap")
    func extremeNumbers() async throws {
        try await withServer { server, client in
            let t = server.adminToken
            for (body, field) in Self.extremeBodies {
                let (status, error) = try await Self.send(client, "/api/v1/workloads", token: t, raw: body)
                #expect(status == .badRequest, "\(body) -> \(status)")
                #expect(error["field"] as? String == field, "\(body) -> \(error)")
            }
            for priority in ["-9223372036854775808", "9223372036854775807", "1000001"] {
                let (status, error) = try await Self.send(client, "/api/v1/queues", token: t, raw: #"{"name": "q", "priority": \#(priority)}"#)
                #expect(status == .badRequest && error["field"] as? String == "priority", "queue priority \(priority) -> \(status) \(error)")
            }
            let (_, w) = try await client.json("/api/v1/workloads", .post, token: t, body: ["command": ["true"], "hold": true])
            let id = try #require(w["id"] as? String)
            for (uri, field) in [
                ("/api/v1/workloads?limit=-9223372036854775808", "limit"), ("/api/v1/workloads?limit=99999999999999999999", "limit"),
                ("/api/v1/workloads?cursor=-9223372036854775808", "cursor"), ("/api/v1/workloads?cursor=99999999999999999999", "cursor"),
                ("/api/v1/workloads/\(id)/tasks/-9223372036854775808/logs", "index"),
                ("/api/v1/workloads/\(id)/tasks/9223372036854775808/logs", "index"),
                ("/api/v1/workloads/\(id)/tasks/0/logs?offset=18446744073709551615", "offset"),
                ("/api/v1/workloads/\(id)/tasks/0/logs?offset=-1", "offset"),
                ("/api/v1/workloads/\(id)/tasks/0/logs?follow=maybe", "follow"),
                ("/api/v1/workloads?phase=", "phase"), ("/api/v1/workloads?phase=Running,", "phase"),
            ] {
                let (status, error) = try await Self.send(client, uri, .get, token: t)
                #expect(status == .badRequest && error["field"] as? String == field, "\(uri) -> \(status) \(error)")
            }
            // The largest offset the document allows reads nothing rather than trapping.
            let (status, _) = try await Self.send(client, "/api/v1/workloads/\(id)/tasks/0/logs?offset=9223372036854775807", .get, token: t)
            #expect(status == .ok)
        }
    }

    static let unknownOrNull: [(String, String, String)] = [
        ("/api/v1/workloads", #"{"command": ["true"], "resources": {"gpu": 2}}"#, "resources.gpu"),
        ("/api/v1/workloads", #"{"command": ["true"], "data": {"inputs": [{"source": "/a", "path": "a", "foo": 1}]}}"#, "data.inputs[0].foo"),
        (
            "/api/v1/workloads", #"{"command": ["true"], "data": {"outputs": [{"path": "a", "destination": "/a", "overwrte": true}]}}"#,
            "data.outputs[0].overwrte"
        ),
        ("/api/v1/workloads", #"{"command": ["true"], "data": {"input": []}}"#, "data.input"),
        ("/api/v1/workloads", #"{"command": ["true"], "resources": {"gpus": null}}"#, "resources.gpus"),
        ("/api/v1/workloads", #"{"command": ["true"], "name": null}"#, "name"),
        ("/api/v1/workloads", #"{"command": ["true"], "env": {"A": null}}"#, "env.A"),
        ("/api/v1/workloads", #"{"command": ["true", null]}"#, "command[1]"),
        ("/api/v1/queues", #"{"name": "q", "description": null}"#, "description"),
        ("/api/v1/queues", #"{"name": "q", "prio": 1}"#, "prio"),
        ("/api/v1/tokens", #"{"user": "u", "description": null}"#, "description"),
        ("/api/v1/tokens", #"{"user": "u", "tennant": "t"}"#, "tennant"),
        ("/api/v1/keys", #"{"description": null}"#, "description"),
        ("/api/v1/keys", #"{"descripton": "x"}"#, "descripton"),
    ]

    @Test("unknown fields at any depth and nulls are refused, naming the field")
    func unknownFieldsAndNulls() async throws {
        try await withServer { server, client in
            for (uri, body, field) in Self.unknownOrNull {
                let (status, error) = try await Self.send(client, uri, token: server.adminToken, raw: body)
                #expect(status == .badRequest, "\(body) -> \(status)")
                #expect(error["field"] as? String == field, "\(body) -> \(error)")
                #expect((error["message"] as? String ?? "").contains(field), "\(body) -> \(error)")
            }
            // Nothing was created by any of it.
            #expect((try await client.json("/api/v1/workloads", token: server.adminToken).1["items"] as? [Any])?.isEmpty == true)
            #expect((try await client.json("/api/v1/keys", token: server.adminToken).1["items"] as? [Any])?.isEmpty == true)
        }
    }

    @Test("what the OpenAPI document allows is accepted, and what the server answers is documented")
    func documentAgrees() async throws {
        try await withServer { server, client in
            let t = server.adminToken
            let doc = try await client.execute(uri: "/api/v1/openapi.json", method: .get) { TestJSON.object($0.body) }
            let paths = try #require(doc["paths"] as? [String: [String: [String: Any]]])
            func documented(_ path: String, _ method: String, _ status: Int) -> Bool {
                (paths[path]?[method]?["responses"] as? [String: Any])?["\(status)"] != nil
            }
            // An empty cursor is the first page.
            #expect(try await client.json("/api/v1/workloads?cursor=", token: t).0 == .ok)
            // A task index past the last is a documented 404.
            let (_, w) = try await client.json("/api/v1/workloads", .post, token: t, body: ["command": ["true"], "hold": true])
            let id = try #require(w["id"] as? String)
            let (past, error) = try await Self.send(client, "/api/v1/workloads/\(id)/tasks/1/logs", .get, token: t)
            #expect(past == .notFound && error["field"] as? String == "index")
            #expect(documented("/workloads/{id}/tasks/{index}/logs", "get", 404))
            // The default queue cannot go: a documented 409.
            #expect(try await client.json("/api/v1/queues/default", .delete, token: t).0 == .conflict)
            #expect(documented("/queues/{name}", "delete", 409))
            // maxDuration's documented minimum is accepted; 0 is outside it.
            let schemas = (doc["components"] as? [String: Any])?["schemas"] as? [String: [String: Any]]
            let maxDuration = (schemas?["CreateWorkload"]?["properties"] as? [String: Any])?["maxDuration"] as? [String: Any]
            let integer = (maxDuration?["oneOf"] as? [[String: Any]])?.first { $0["type"] as? String == "integer" }
            #expect(integer?["minimum"] as? Int == 1)
            let (created, _) = try await client.json("/api/v1/workloads", .post, token: t, body: ["command": ["true"], "hold": true, "maxDuration": 1])
            #expect(created == .created)
            _ = try await client.json("/api/v1/workloads/\(id)/stop", .post, token: t)
        }
    }

    @Test("a method a path does not take is 405 with Allow, in the API's error shape; an unknown path is still 404")
    func methodNotAllowed() async throws {
        try await withServer { server, client in
            for (method, uri, allow) in [
                (HTTPRequest.Method.trace, "/api/v1/workloads", "POST, GET"), (.put, "/api/v1/workloads/abc", "GET, DELETE"),
                (.put, "/api/v1/queues/default", "DELETE"), (.post, "/api/v1/openapi.json", "GET"), (.patch, "/api/v1/data/content", "GET, PUT"),
            ] {
                try await client.execute(uri: uri, method: method, headers: authHeaders(server.adminToken)) { r in
                    #expect(r.status == .methodNotAllowed, "\(method) \(uri) -> \(r.status)")
                    #expect(r.headers[.allow] == allow, "\(method) \(uri)")
                    #expect((TestJSON.object(r.body)["error"] as? [String: Any])?["code"] as? String == "MethodNotAllowed")
                }
            }
            #expect(try await client.json("/api/v1/nosuchthing", .trace, token: server.adminToken).0 == .notFound)
        }
    }

    @Test("a workdir that leaves the task's directory is a 400 naming workdir at submit, not a failed launch later")
    func escapingWorkdir() async throws {
        try await withServer { server, client in
            for wd in ["../../x", "a/../../b", ".."] {
                let (status, error) = try await Self.send(client, "/api/v1/workloads", token: server.adminToken, raw: #"{"command": ["true"], "workdir": "\#(wd)"}"#)
                #expect(status == .badRequest && error["field"] as? String == "workdir", "\(wd) -> \(status) \(error)")
            }
            let (ok, _) = try await Self.send(client, "/api/v1/workloads", token: server.adminToken, raw: #"{"command": ["true"], "workdir": "a/../b", "hold": true}"#)
            #expect(ok == .created)
        }
    }

    @Test("a data path with a name over 255 bytes, a NUL or over 4096 bytes is a 400 naming path, not a 500")
    func longDataPaths() async throws {
        try await withServer { server, client in
            let t = server.adminToken
            let long = String(repeating: "a", count: 256)
            for path in [
                "/user/\(long)", "/\(String(repeating: "%C3%A9", count: 128))", "/a%00b", "/" + Array(repeating: "abcdefgh", count: 600).joined(separator: "/"),
            ] {
                for method in [HTTPRequest.Method.put, .get] {
                    try await client.execute(uri: "/api/v1/data/content?path=\(path)", method: method, headers: authHeaders(t), body: ByteBuffer(string: "x")) {
                        r in
                        #expect(r.status == .badRequest, "\(method) \(path.prefix(40)) -> \(r.status)")
                        #expect((TestJSON.object(r.body)["error"] as? [String: Any])?["field"] as? String == "path")
                    }
                }
            }
            // The longest name that fits is fine.
            try await client.execute(
                uri: "/api/v1/data/content?path=/user/\(String(repeating: "b", count: 255))", method: .put, headers: authHeaders(t),
                body: ByteBuffer(string: "x")
            ) { #expect($0.status == .created) }
        }
    }

    @Test("inside a tenant everyone sees every workload; only its owner or an admin may stop or release it")
    func ownership() async throws {
        try await withServer { server, client in
            let admin = server.adminToken
            let (_, a) = try await client.json("/api/v1/tokens", .post, token: admin, body: ["user": "alice", "tenant": "team-a"])
            let (_, c) = try await client.json("/api/v1/tokens", .post, token: admin, body: ["user": "carol", "tenant": "team-a"])
            let (_, b) = try await client.json("/api/v1/tokens", .post, token: admin, body: ["user": "bob", "tenant": "team-b"])
            let alice = try #require(a["token"] as? String)
            let carol = try #require(c["token"] as? String)
            let bob = try #require(b["token"] as? String)
            let (_, w) = try await client.json("/api/v1/workloads", .post, token: alice, body: ["command": ["true"], "hold": true])
            let id = try #require(w["id"] as? String)
            // Carol sees it, in the list too, but may not change it.
            #expect(try await client.json("/api/v1/workloads/\(id)", token: carol).0 == .ok)
            #expect((try await client.json("/api/v1/workloads", token: carol).1["items"] as? [Any])?.count == 1)
            for action in ["stop", "release"] {
                let (status, body) = try await client.json("/api/v1/workloads/\(id)/\(action)", .post, token: carol)
                let error = body["error"] as? [String: Any]
                #expect(status == .forbidden, "\(action) -> \(status)")
                #expect(error?["code"] as? String == "PermissionDenied")
                let message = error?["message"] as? String ?? ""
                #expect(message.contains("only its owner or an admin may \(action)"), "\(message)")
                // Bob, in another tenant, cannot tell it exists.
                #expect(try await client.json("/api/v1/workloads/\(id)/\(action)", .post, token: bob).0 == .notFound)
            }
            let (_, still) = try await client.json("/api/v1/workloads/\(id)", token: alice)
            #expect(still["phase"] as? String == "Pending")
            // The owner may release it; an admin may stop another of hers.
            #expect(try await client.json("/api/v1/workloads/\(id)/release", .post, token: alice).0 == .ok)
            let (_, second) = try await client.json("/api/v1/workloads", .post, token: alice, body: ["command": ["true"], "hold": true])
            let (stopped, body) = try await client.json("/api/v1/workloads/\(try #require(second["id"] as? String))/stop", .post, token: admin)
            #expect(stopped == .ok && body["phase"] as? String == "Cancelled")
            // The document says so.
            let doc = try await client.execute(uri: "/api/v1/openapi.json", method: .get) { TestJSON.object($0.body) }
            let stop = ((doc["paths"] as? [String: Any])?["/workloads/{id}/stop"] as? [String: Any])?["post"] as? [String: Any]
            #expect((stop?["responses"] as? [String: Any])?["403"] != nil)
        }
    }
}

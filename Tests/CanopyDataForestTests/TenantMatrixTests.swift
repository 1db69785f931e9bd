import CanopyApp
import CanopyCore
import CanopyTesting
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

@testable import CanopyDataForest

/// Every read, stop, log and data operation, in the native API and in the Data Forest dialect, tried by one
/// tenant on another tenant's objects: each must look exactly like a missing object and change nothing.
@Suite("tenant isolation matrix, native and Data Forest")
struct TenantMatrixTests {
    struct Attempt {
        var name: String
        var status: HTTPResponse.Status
        var body: [String: Any]
    }

    func token(_ client: any TestClientProtocol, _ admin: String, _ user: String, _ tenant: String) async throws -> String {
        let (_, t) = try await client.json("/api/v1/tokens", .post, token: admin, body: ["user": user, "tenant": tenant])
        return try #require(t["token"] as? String)
    }

    func code(_ body: [String: Any]) -> String? { (body["error"] as? [String: Any])?["code"] as? String }

    @Test("another tenant's workloads, logs, data, credentials, workspaces, apps and accounts look missing and stay as they were")
    func matrix() async throws {
        try await withServer { server, client in
            let admin = server.adminToken
            let alice = try await token(client, admin, "alice", "team-a")
            let bob = try await token(client, admin, "bob", "team-b")
            let aliceKey = try await client.newKey(token: alice)
            let bobKey = try await client.newKey(token: bob)

            // Alice's objects: a running workload, a held one, a file, a token and a key, a workspace and an app.
            let (_, w) = try await client.json("/api/v1/workloads", .post, token: alice, body: ["command": ["sleep", "30"], "env": ["SECRET": "alice"]])
            let running = try #require(w["id"] as? String)
            let (_, h) = try await client.json("/api/v1/workloads", .post, token: alice, body: ["command": ["true"], "hold": true])
            let held = try #require(h["id"] as? String)
            _ = try await client.waitForPhase(running, token: alice, ["Running"])
            let put = try await client.execute(
                uri: "/api/v1/data/content?path=/shared/a.txt", method: .put, headers: authHeaders(alice), body: ByteBuffer(string: "alice's data\n")
            ) { $0.status }
            #expect(put == .created || put == .ok || put == .noContent)
            let (_, tokens) = try await client.json("/api/v1/tokens", token: alice)
            let aliceTokenID = try #require((tokens["items"] as? [[String: Any]])?.first?["id"] as? String)
            let (_, keys) = try await client.json("/api/v1/keys", token: alice)
            let aliceKeyID = try #require((keys["items"] as? [[String: Any]])?.first?["id"] as? String)
            let accounts = try await client.df("accounts/getList", [:], aliceKey).1
            let account = try #require((accounts["contents"] as? [[String: Any]])?.first?["id"] as? String)
            let ws = try #require(
                try await client.df(
                    "aiworkspaces/create", ["accountId": account, "name": "alices", "configuration": ["docker": ["command": "sleep 30", "image": "tf:1"]]], aliceKey
                ).1["id"] as? String)
            let submitted = try await client.df("aiapps/submit", ["aiWorkspaceId": ws, "namePrefix": "al"], aliceKey)
            let app = try #require(submitted.1["id"] as? String, "\(submitted)")

            // The same operation on an object that does not exist, for comparison.
            let nobody = "ZZZZZZZZZZZZZZZZZZZZZZ"
            var native: [(String, HTTPRequest.Method, String, String)] = []  // name, method, uri for alice's, uri for a missing one
            for (name, method, path) in [
                ("get", HTTPRequest.Method.get, "/api/v1/workloads/%@"), ("stop", .post, "/api/v1/workloads/%@/stop"),
                ("logs", .get, "/api/v1/workloads/%@/tasks/0/logs"), ("logs stderr", .get, "/api/v1/workloads/%@/tasks/0/logs?stream=stderr"),
                ("follow logs", .get, "/api/v1/workloads/%@/tasks/0/logs?follow=true"),
            ] {
                native.append((name, method, path.replacingOccurrences(of: "%@", with: running), path.replacingOccurrences(of: "%@", with: nobody)))
                native.append((name + " (app)", method, path.replacingOccurrences(of: "%@", with: app), path.replacingOccurrences(of: "%@", with: nobody)))
            }
            native.append(("release", .post, "/api/v1/workloads/\(held)/release", "/api/v1/workloads/\(nobody)/release"))
            native.append(("revoke token", .delete, "/api/v1/tokens/\(aliceTokenID)", "/api/v1/tokens/\(nobody)"))
            native.append(("revoke key", .delete, "/api/v1/keys/\(aliceKeyID)", "/api/v1/keys/\(nobody)"))
            var attempts = 0
            for (name, method, theirs, missing) in native {
                let (s1, b1) = try await client.json(theirs, method, token: bob)
                let (s2, b2) = try await client.json(missing, method, token: bob)
                #expect(s1 == .notFound && s1 == s2 && code(b1) == code(b2), "native \(name): \(s1) \(b1) vs \(s2) \(b2)")
                attempts += 1
            }
            // Data: bob's namespace is his own; alice's path is simply not in it.
            for (name, method, uri) in [
                ("data get", HTTPRequest.Method.get, "/api/v1/data/content?path=/shared/a.txt"), ("data ls", .get, "/api/v1/data?path=/shared"),
                ("data rm", .delete, "/api/v1/data?path=/shared/a.txt"),
            ] {
                let (s, b) = try await client.json(uri, method, token: bob)
                #expect(s == .notFound, "\(name): \(s) \(b)")
                attempts += 1
            }
            // Listings never show her objects, whatever filter bob asks for.
            for uri in ["/api/v1/workloads", "/api/v1/workloads?tenant=team-a", "/api/v1/workloads?phase=Running", "/api/v1/tokens", "/api/v1/keys"] {
                let (_, page) = try await client.json(uri, token: bob)
                let ids = Set((page["items"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String })
                #expect(ids.isDisjoint(with: [running, held, app, aliceTokenID, aliceKeyID]), "\(uri): \(ids)")
                attempts += 1
            }
            // Staging her file into his own task finds nothing.
            let (staged, stagedBody) = try await client.json(
                "/api/v1/workloads", .post, token: bob, body: ["command": ["cat", "a.txt"], "data": ["inputs": [["source": "/shared/a.txt", "path": "a.txt"]]]])
            if staged == .created, let id = stagedBody["id"] as? String {
                let done = try await client.waitForPhase(id, token: bob, ["Failed", "Succeeded"])
                #expect(done["phase"] as? String == "Failed", "\(done)")
                let (_, log) = try await client.execute(uri: "/api/v1/workloads/\(id)/tasks/0/logs", method: .get, headers: authHeaders(bob)) { ($0.status, String(buffer: $0.body)) }
                #expect(!log.contains("alice's data"))
            } else {
                #expect(staged.code >= 400 && staged.code < 500, "\(staged) \(stagedBody)")
            }
            attempts += 1

            // The dialect: bob's own access key, alice's ids.
            let dialect: [(String, [String: Any])] = [
                ("aiworkspaces/getDetail", ["id": ws]), ("aiworkspaces/getConfigurationList", ["id": ws]),
                ("aiworkspaces/setConfiguration", ["id": ws, "configuration": ["docker": ["command": "echo pwned", "image": "tf:1"]]]),
                ("aiworkspaces/delete", ["id": ws]), ("aiworkspaces/getList", ["search": ["accountId": account]]),
                ("aiapps/submit", ["aiWorkspaceId": ws, "namePrefix": "bo"]), ("aiapps/getDetail", ["id": app]), ("aiapps/kill", ["id": app]),
                ("aiapps/getList", ["search": ["aiWorkspaceId": ws]]), ("accounts/getDetail", ["id": account]),
            ]
            func missing(_ body: [String: Any]) -> [String: Any] {
                var copy = body
                for (k, v) in body {
                    if let text = v as? String, [ws, app, account].contains(text) { copy[k] = nobody }
                    if let nested = v as? [String: Any] { copy[k] = missing(nested) }
                }
                return copy
            }
            for (op, body) in dialect {
                let (s, b) = try await client.df(op, body, bobKey)
                let (s2, b2) = try await client.df(op, missing(body), bobKey)
                #expect(s == s2 && b["message"] as? String == b2["message"] as? String, "\(op): \(s) \(b) vs \(s2) \(b2)")
                #expect(s == .notFound || (b["contents"] as? [Any])?.isEmpty == true, "\(op): \(s) \(b)")
                attempts += 1
            }
            let logURI = "/api/v2/aiapps/\(app)/containers/0/log"
            let logStatus = try await client.execute(uri: logURI, method: .get, headers: bobKey.headers("GET", logURI)) { $0.status }
            #expect(logStatus == .notFound)
            attempts += 1

            // Nothing of hers changed.
            #expect(try await client.json("/api/v1/workloads/\(running)", token: alice).1["phase"] as? String == "Running")
            #expect(try await client.json("/api/v1/workloads/\(held)", token: alice).1["phase"] as? String == "Pending")
            #expect(try await client.json("/api/v1/whoami", token: alice).0 == .ok)
            #expect(try await client.df("aiworkspaces/getDetail", ["id": ws], aliceKey).0 == .ok)
            #expect(try await client.df("aiapps/getDetail", ["id": app], aliceKey).0 == .ok)
            let content = try await client.execute(uri: "/api/v1/data/content?path=/shared/a.txt", method: .get, headers: authHeaders(alice)) { String(buffer: $0.body) }
            #expect(content == "alice's data\n")
            print("tenant isolation matrix: \(attempts) cross-tenant attempts, all refused as missing")
            #expect(attempts == 33)
            _ = try await client.json("/api/v1/workloads/\(running)/stop", .post, token: alice)
            _ = try await client.df("aiapps/kill", ["id": app], aliceKey)
        }
    }
}

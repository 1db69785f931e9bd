import CanopyApp
import CanopyCore
import CanopyServices
import CanopyTesting
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

/// Signs `user` in through `/ac/openapi/v2/tokens` after an admin gives them a password.
func scnetToken(_ client: any TestClientProtocol, admin: String, user: String = "alice", tenant: String = "lab") async throws -> String {
    let made = try await client.json("/api/v1/users", .post, token: admin, body: ["user": user, "tenant": tenant, "password": "\(user)-password"])
    #expect(made.0 == .created, "\(made)")
    var h: HTTPFields = [:]
    h[HTTPField.Name("user")!] = user
    h[HTTPField.Name("password")!] = "\(user)-password"
    h[HTTPField.Name("orgId")!] = TenantID.of(tenant)
    let answer = try await client.execute(uri: "/ac/openapi/v2/tokens", method: .post, headers: h) { TestJSON.object($0.body) }
    let tokens = try #require(answer["data"] as? [[String: Any]], "\(answer)")
    return try #require(tokens.last?["token"] as? String)
}

extension TestClientProtocol {
    /// An SCNet call: raw bytes with the `token` header; the HTTP status and the envelope.
    func scnet(_ uri: String, _ method: HTTPRequest.Method = .post, token: String, bytes: [UInt8]? = nil) async throws -> (HTTPResponse.Status, [String: Any]) {
        var h: HTTPFields = [.contentType: "application/json"]
        h[HTTPField.Name("token")!] = token
        return try await execute(uri: uri, method: method, headers: h, body: bytes.map { ByteBuffer(bytes: $0) }) { ($0.status, TestJSON.object($0.body)) }
    }
}

@Suite("SCNet dialect through the application: golden envelopes, hostile bodies, other tenants")
struct SCNetAPITests {
    /// The seed's body without its data mount (this server runs images as processes, and those take no mounts), and
    /// with 1 GB where it asks 15 (this test node has 8).
    func seedBytes() throws -> [UInt8] {
        var object = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: scnetFixtures.appendingPathComponent("create-seed.json"))) as? [String: Any])
        object.removeValue(forKey: "mountInfoList")
        object["ramSize"] = 1024
        return Array(try JSONSerialization.data(withJSONObject: object))
    }

    /// The seed's body asking for no GPU.
    func cpuBytes() throws -> [UInt8] {
        var body = try #require(try JSONSerialization.jsonObject(with: Data(try seedBytes())) as? [String: Any])
        body["gpuNumber"] = 0
        body["acceleratorType"] = "cpu"
        return Array(try JSONSerialization.data(withJSONObject: body))
    }

    @Test("the seed's create answers in the golden envelope; every error is HTTP 200 with a string code, a missing route 404 in the envelope")
    func golden() async throws {
        try await withServer { server, client in
            let token = try await scnetToken(client, admin: server.adminToken)
            let (status, answer) = try await client.scnet("/ai/openapi/v2/instance-service/task", token: token, bytes: try seedBytes())
            let golden = try #require(
                try JSONSerialization.jsonObject(with: Data(contentsOf: scnetFixtures.appendingPathComponent("create-response.json"))) as? [String: Any])
            #expect(status == .ok && Set(answer.keys) == Set(golden.keys), "\(answer)")
            #expect(answer["code"] as? String == "0", "\(answer)")
            #expect(answer["code"] as? String == golden["code"] as? String && answer["msg"] as? String == golden["msg"] as? String)
            let id = try #require(answer["data"] as? String)
            #expect(!id.isEmpty)
            // One object: the native API sees the same workload.
            let w = try await client.json("/api/v1/workloads/\(id)", token: server.adminToken).1
            #expect((w["spec"] as? [String: Any])?["kind"] as? String == "interactive", "\(w)")

            // Errors: 200 and a code; no credentials; a route the dialect does not have.
            let missing = try await client.scnet("/ai/openapi/v2/instance-service/task", token: token, bytes: Array("{}".utf8))
            #expect(missing.0 == .ok && missing.1["code"] as? String == "10003" && missing.1.keys.sorted() == ["code", "data", "msg"], "\(missing)")
            let anonymous = try await client.execute(uri: "/ai/openapi/v2/instance-service/task", method: .post) { ($0.status, TestJSON.object($0.body)) }
            #expect(anonymous.0 == .ok && anonymous.1["code"] as? String == "10009", "\(anonymous)")
            let nowhere = try await client.scnet("/ai/openapi/v2/no-such-thing", .get, token: token)
            #expect(nowhere.0 == .notFound && nowhere.1["code"] as? String == "10004", "\(nowhere)")
            // An SCNet token opens its user's instances through the proxy, but is no credential of the native API (it
            // could mint access keys or change the password there); a Canopy token is not an SCNet token.
            let native = try await client.json("/api/v1/whoami", token: token)
            #expect(native.0 == .unauthorized, "\(native)")
            let wrongWay = try await client.scnet("/ac/openapi/v2/user", .get, token: server.adminToken)
            #expect(wrongWay.1["code"] as? String == "10009")
            try await stopAndWait(client, [id], admin: server.adminToken)
        }
    }

    @Test("byte-level mutations of the seed's create body never get a 5xx, only the documented codes, and a refused body stores nothing")
    func mutations() async throws {
        try await withServer { server, client in
            let token = try await scnetToken(client, admin: server.adminToken)
            var seed = try seedBytes()
            // What a mutation lets through waits: it asks for all of the node's memory, which the first one takes.
            seed = Array(String(decoding: seed, as: UTF8.self).replacingOccurrences(of: "1024", with: "8192").utf8)
            var rng = SplitMix64(seed: 13)
            let interesting: [UInt8] = [0x00, 0x22, 0x2C, 0x3A, 0x5B, 0x5D, 0x7B, 0x7D, 0x2D, 0x30, 0x39, 0x65, 0x80, 0xFF, 0x5C]
            var codes: [String: Int] = [:]
            for _ in 0..<400 {
                let bytes = rng.mutate(seed, interesting: interesting, insert: Array("1e999".utf8))
                let (status, answer) = try await client.scnet("/ai/openapi/v2/instance-service/task", token: token, bytes: bytes)
                #expect(status == .ok, "\(String(decoding: bytes, as: UTF8.self)) -> \(status)")
                let code = answer["code"] as? String ?? "none"
                #expect(["0", "10003", "10004"].contains(code), "\(String(decoding: bytes, as: UTF8.self)) -> \(answer)")
                codes[code, default: 0] += 1
            }
            #expect(codes["10004", default: 0] > 0 && codes["10003", default: 0] > 0, "\(codes)")
            // Exactly the accepted ones were stored.
            let listed = try await client.json("/api/v1/workloads?limit=1000", token: server.adminToken).1["items"] as? [[String: Any]] ?? []
            #expect(listed.count == codes["0", default: 0], "\(codes)")
            try await stopAndWait(client, listed.compactMap { $0["id"] as? String }, admin: server.adminToken)
        }
    }

    @Test("another tenant's ids are missing ones: detail, stop, restart, delete, url and execute-script all answer 10004 and change nothing")
    func otherTenants() async throws {
        try await withServer { server, client in
            let alice = try await scnetToken(client, admin: server.adminToken)
            let mallory = try await scnetToken(client, admin: server.adminToken, user: "mallory", tenant: "other")
            let id = try #require(try await client.scnet("/ai/openapi/v2/instance-service/task", token: alice, bytes: try cpuBytes()).1["data"] as? String)
            let base = "/ai/openapi/v2/instance-service"
            let probes: [(String, HTTPRequest.Method, [UInt8]?)] = [
                ("\(base)/\(id)/detail", .get, nil), ("\(base)/\(id)/url", .get, nil), ("\(base)/task/actions/stop?ids=\(id)", .post, nil),
                ("\(base)/task/actions/restart?instanceServiceId=\(id)", .post, nil), ("\(base)/task?ids=\(id)", .delete, nil),
                ("\(base)/task/actions/execute-script", .post, Array(#"{"id":"\#(id)","startScriptContent":"true"}"#.utf8)),
            ]
            for (uri, method, bytes) in probes {
                let (status, answer) = try await client.scnet(uri, method, token: mallory, bytes: bytes)
                #expect(status == .ok && answer["code"] as? String == "10004" && (answer["msg"] as? String ?? "").contains("no instance"), "\(uri): \(answer)")
            }
            let unknown = try await client.scnet("\(base)/NoSuchInstance/detail", .get, token: mallory)
            let theirs = try await client.scnet("\(base)/\(id)/detail", .get, token: mallory).1["msg"] as? String
            #expect(unknown.1["msg"] as? String == theirs?.replacingOccurrences(of: id, with: "NoSuchInstance"), "the same words for both")
            let listed = try await client.scnet("\(base)/task", .get, token: mallory, bytes: Array(#"{"limit":100}"#.utf8))
            #expect((listed.1["data"] as? [String: Any])?["total"] as? Int == 0, "\(listed)")
            let still = try await client.scnet("\(base)/\(id)/detail", .get, token: alice)
            #expect(["Waiting", "Deploying", "Running"].contains((still.1["data"] as? [String: Any])?["status"] as? String ?? ""), "\(still)")
            try await stopAndWait(client, [id], admin: server.adminToken)
        }
    }
}

extension SCNetAPITests {
    @Test("the AK/SK sign-in with timestamps at the ends of Int64 is refused, not a crash; unknown keys and wrong signatures get one answer")
    func accessKeyEdges() async throws {
        try await withServer { server, client in
            for ts in ["-9223372036854775808", "9223372036854775807", "-1", "0", "99999999999999999999", "1e3", "now"] {
                var h: HTTPFields = [:]
                for (k, v) in [("user", "admin"), ("accessKey", "AK"), ("timestamp", ts), ("signature", "00")] { h[HTTPField.Name(k)!] = v }
                let (status, answer) = try await client.execute(uri: "/api/user/v3/tokens", method: .post, headers: h) { ($0.status, TestJSON.object($0.body)) }
                #expect(status == .ok && answer["code"] as? String == "10004" && (answer["msg"] as? String ?? "").contains("timestamp"), "\(ts): \(answer)")
            }
            var h: HTTPFields = [:]
            let now = String(Int(Date().timeIntervalSince1970))
            for (k, v) in [("user", "admin"), ("accessKey", "NOSUCHKEY"), ("timestamp", now), ("signature", "00")] { h[HTTPField.Name(k)!] = v }
            let unknown = try await client.execute(uri: "/api/user/v3/tokens", method: .post, headers: h) { TestJSON.object($0.body) }
            #expect(unknown["code"] as? String == "10009" && unknown["msg"] as? String == "verification failed: wrong user, access key or signature")
            // The server still answers.
            #expect(try await client.json("/api/v1/whoami", token: server.adminToken).0 == .ok)
        }
    }

    @Test("a colleague's instance: seen, but stop, restart, delete, execute-script and url are 10008, and a list of ids stops none of them")
    func colleagues() async throws {
        try await withServer { server, client in
            let alice = try await scnetToken(client, admin: server.adminToken)
            let carol = try await scnetToken(client, admin: server.adminToken, user: "carol")
            let bytes = try cpuBytes()
            let mine = try #require(try await client.scnet("/ai/openapi/v2/instance-service/task", token: carol, bytes: bytes).1["data"] as? String)
            let theirs = try #require(try await client.scnet("/ai/openapi/v2/instance-service/task", token: alice, bytes: bytes).1["data"] as? String)
            let base = "/ai/openapi/v2/instance-service"
            #expect(try await client.scnet("\(base)/\(theirs)/detail", .get, token: carol).1["code"] as? String == "0")
            let probes: [(String, HTTPRequest.Method, [UInt8]?)] = [
                ("\(base)/task/actions/stop?ids=\(mine)&ids=\(theirs)", .post, nil), ("\(base)/task/actions/restart?instanceServiceId=\(theirs)", .post, nil),
                ("\(base)/task?ids=\(theirs)", .delete, nil), ("\(base)/\(theirs)/url", .get, nil),
                ("\(base)/task/actions/execute-script", .post, Array(#"{"id":"\#(theirs)","startScriptContent":"true"}"#.utf8)),
            ]
            for (uri, method, bytes) in probes {
                let answer = try await client.scnet(uri, method, token: carol, bytes: bytes).1
                #expect(answer["code"] as? String == "10008", "\(uri): \(answer)")
            }
            // Carol's own was not stopped by the list that named Alice's too.
            let own = try await client.scnet("\(base)/\(mine)/detail", .get, token: carol).1["data"] as? [String: Any]
            #expect(["Waiting", "Deploying", "Running"].contains(own?["status"] as? String ?? ""), "\(own ?? [:])")
            try await stopAndWait(client, [mine, theirs], admin: server.adminToken)
        }
    }

    @Test("changing your own password needs the current one; an admin's SCNet token reaches only its own tenant's instances")
    func passwordsAndAdminScope() async throws {
        try await withServer { server, client in
            let alice = try await scnetToken(client, admin: server.adminToken)
            // A Canopy token of alice's (a stolen one, say) cannot change her password without it.
            let aliceToken =
                try await client.json("/api/v1/tokens", .post, token: server.adminToken, body: ["user": "alice", "tenant": "lab"]).1["token"] as? String ?? ""
            let without = try await client.json("/api/v1/users/lab/alice/password", .put, token: aliceToken, body: ["password": "new-password-1"])
            #expect(without.0 == .badRequest && (without.1["error"] as? [String: Any])?["field"] as? String == "currentPassword", "\(without)")
            let wrong = try await client.json(
                "/api/v1/users/lab/alice/password", .put, token: aliceToken, body: ["password": "new-password-1", "currentPassword": "not-it-at-all"])
            #expect(wrong.0 == .forbidden, "\(wrong)")
            let right = try await client.json(
                "/api/v1/users/lab/alice/password", .put, token: aliceToken, body: ["password": "new-password-1", "currentPassword": "alice-password"])
            #expect(right.0 == .noContent, "\(right)")
            // Which revoked the SCNet token she had.
            #expect(try await client.scnet("/ac/openapi/v2/tokens/state", .get, token: alice).1["code"] as? String == "10009")

            let bob = try await scnetToken(client, admin: server.adminToken, user: "bob", tenant: "other")
            let id = try #require(try await client.scnet("/ai/openapi/v2/instance-service/task", token: bob, bytes: try cpuBytes()).1["data"] as? String)
            let admin = try await client.json(
                "/api/v1/users", .post, token: server.adminToken, body: ["user": "boss", "tenant": "ops", "role": "admin", "password": "boss-password"])
            #expect(admin.0 == .created)
            var h: HTTPFields = [:]
            for (k, v) in [("user", "boss"), ("password", "boss-password"), ("orgId", TenantID.of("ops"))] { h[HTTPField.Name(k)!] = v }
            let bossToken = try #require(
                (try await client.execute(uri: "/ac/openapi/v2/tokens", method: .post, headers: h) { TestJSON.object($0.body) }["data"] as? [[String: Any]])?
                    .last?["token"] as? String)
            let seen = try await client.scnet("/ai/openapi/v2/instance-service/\(id)/detail", .get, token: bossToken).1
            #expect(seen["code"] as? String == "10004", "an admin's SCNet token is for its own organisation: \(seen)")
            // And so at the proxy: it opens what a user of its tenant may, never another tenant's instances.
            #expect(server.endpoints.principal(bearer: bossToken) == Principal(user: "boss", tenant: "ops", role: .user))
            try await stopAndWait(client, [id], admin: server.adminToken)
        }
    }
}

/// Stops workloads and waits until they are down: the in-process server leaves running tasks running when the test ends.
func stopAndWait(_ client: any TestClientProtocol, _ ids: [String], admin: String) async throws {
    for id in ids { _ = try await client.json("/api/v1/workloads/\(id)/stop", .post, token: admin) }
    for id in ids { _ = try await client.waitForPhase(id, token: admin, ["Stopped", "Cancelled", "Failed", "Succeeded"], timeout: .seconds(20)) }
}

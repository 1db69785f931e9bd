import CanopyApp
import CanopyCore
import CanopyTesting
import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

/// A server whose catalog has the in-memory engine, with its image policy left to the default (engine).
func withImageServer(
    hostMounts: [String] = [], _ test: @Sendable @escaping (CanopyServer, any TestClientProtocol, FakeImageEngine) async throws -> Void
) async throws {
    var config = try testConfiguration()
    config.imagePolicy = nil
    config.hostMounts = hostMounts
    let engine = FakeImageEngine()
    try await withServer(config, imageEngine: engine) { server, client in try await test(server, client, engine) }
}

extension TestClientProtocol {
    /// Issues a token for a user of a tenant.
    func token(_ user: String, tenant: String, admin: String) async throws -> String {
        let (_, t) = try await json("/api/v1/tokens", .post, token: admin, body: ["user": user, "tenant": tenant])
        return t["token"] as? String ?? ""
    }

    /// Imports `bytes` as an image; the status and the answer.
    func importImage(_ name: String, public isPublic: Bool = false, token: String, bytes: Int = 512) async throws -> (HTTPResponse.Status, [String: Any]) {
        let encoded = name.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? name
        return try await execute(
            uri: "/api/v1/images/import?name=\(encoded)&public=\(isPublic)", method: .post, headers: authHeaders(token),
            body: ByteBuffer(repeating: 1, count: bytes)
        ) { r in (r.status, TestJSON.object(r.body)) }
    }

    /// The number of workloads the caller sees.
    func workloadCount(token: String) async throws -> Int {
        (try await json("/api/v1/workloads?limit=1000", token: token).1["items"] as? [Any])?.count ?? -1
    }
}

func errorField(_ body: [String: Any]) -> String? { (body["error"] as? [String: Any])?["field"] as? String }
func errorMessage(_ body: [String: Any]) -> String { (body["error"] as? [String: Any])?["message"] as? String ?? "" }

@Suite("images through the native API")
struct ImagesAPITests {
    @Test("import, list, show (URL-encoded name), remove; another tenant's private image is 404; only admins add public images")
    func catalog() async throws {
        try await withImageServer { server, client, engine in
            let admin = server.adminToken
            let alice = try await client.token("alice", tenant: "acme", admin: admin)
            let bob = try await client.token("bob", tenant: "globex", admin: admin)
            let (created, pub) = try await client.importImage("busybox:1.36", public: true, token: admin, bytes: 2048)
            #expect(created == .created)
            #expect(pub["public"] as? Bool == true && pub["sizeBytes"] as? Int == 2048 && pub["engineReference"] as? String == "canopy/public/busybox:1.36")
            // Users may not add public images (refused before the body is read).
            let (forbidden, e) = try await client.importImage("tool:1", public: true, token: alice)
            #expect(forbidden == .forbidden && errorField(e) == "public")
            #expect(try await client.importImage("team/tool", token: alice).0 == .created)

            let (_, mine) = try await client.json("/api/v1/images", token: alice)
            #expect((mine["items"] as? [[String: Any]])?.compactMap { $0["name"] as? String } == ["busybox:1.36", "team/tool:latest"])
            let (_, theirs) = try await client.json("/api/v1/images", token: bob)
            #expect((theirs["items"] as? [[String: Any]])?.count == 1)
            let (shown, one) = try await client.json("/api/v1/images/team%2Ftool%3Alatest", token: alice)
            #expect(shown == .ok && one["tenant"] as? String == "acme" && one["source"] as? String == "import")
            #expect(try await client.json("/api/v1/images/busybox:1.36", token: bob).0 == .ok)
            // Bob cannot tell Alice's image from a missing one.
            let (hidden, h) = try await client.json("/api/v1/images/team%2Ftool%3Alatest", token: bob)
            let (missing, m) = try await client.json("/api/v1/images/team%2Fnosuch%3Alatest", token: bob)
            #expect(hidden == .notFound && missing == .notFound)
            #expect(errorMessage(h).replacingOccurrences(of: "tool", with: "nosuch") == errorMessage(m))
            #expect(try await client.json("/api/v1/images/team%2Ftool%3Alatest?tenant=acme", token: bob).0 == .notFound)
            #expect(try await client.json("/api/v1/images/team%2Ftool%3Alatest", .delete, token: bob).0 == .notFound)
            #expect(try await client.json("/api/v1/images/team%2Ftool%3Alatest?tenant=acme", token: admin).0 == .ok)
            // Removing: users may not remove public images; Alice removes her own.
            #expect(try await client.json("/api/v1/images/busybox%3A1.36", .delete, token: alice).0 == .forbidden)
            #expect(try await client.json("/api/v1/images/team%2Ftool", .delete, token: alice).0 == .noContent)
            #expect(try await client.json("/api/v1/images/team%2Ftool", token: alice).0 == .notFound)
            #expect(engine.references == ["canopy/public/busybox:1.36"])
            // /images/pull is the pull route's: another method there is a 405 naming POST, not a lookup of an image "pull".
            for method in [HTTPRequest.Method.get, .options, .delete] {
                try await client.execute(uri: "/api/v1/images/pull", method: method, headers: authHeaders(admin)) { r in
                    #expect(r.status == .methodNotAllowed && r.headers[.allow] == "POST", "\(method)")
                }
            }
            try await client.execute(uri: "/api/v1/images/busybox", method: .put, headers: authHeaders(admin)) { r in
                #expect(r.status == .methodNotAllowed && r.headers[.allow] == "GET, DELETE")
            }
            // A bad name is a 400 naming it; an empty body is refused.
            let (bad, b) = try await client.importImage("Bad Name", token: alice)
            #expect(bad == .badRequest && errorField(b) == "name")
            let (empty, eb) = try await client.importImage("empty:1", token: alice, bytes: 0)
            #expect(empty == .badRequest && errorField(eb) == "body")
        }
    }

    @Test("pull streams progress lines as NDJSON, then the image; load adds what the archive names")
    func pullAndLoad() async throws {
        try await withImageServer { server, client, _ in
            let alice = try await client.token("alice", tenant: "acme", admin: server.adminToken)
            let lines = try await client.execute(
                uri: "/api/v1/images/pull", method: .post, headers: authHeaders(alice), body: TestJSON.body(["reference": "ghcr.io/org/app:v2"])
            ) { r in
                #expect(r.status == .ok && r.headers[.contentType] == "application/x-ndjson")
                return String(buffer: r.body).split(separator: "\n").map { TestJSON.object(ByteBuffer(string: String($0))) }
            }
            #expect(lines.count == 4)
            #expect(lines.first?["progress"] as? String == "Pulling from library/busybox")
            #expect((lines.last?["image"] as? [String: Any])?["name"] as? String == "org/app:v2")
            // A pull that fails once started ends with an error line.
            let failed = try await client.execute(
                uri: "/api/v1/images/pull", method: .post, headers: authHeaders(alice), body: TestJSON.body(["reference": "nosuch/image:1"])
            ) { r in String(buffer: r.body).split(separator: "\n").map { TestJSON.object(ByteBuffer(string: String($0))) } }
            #expect((failed.last?["error"] as? [String: Any])?["code"] as? String == "NotFound")
            // Checked before it starts: 4xx with the field.
            let (bad, b) = try await client.json("/api/v1/images/pull", .post, token: alice, body: ["reference": "UPPER:1"])
            #expect(bad == .badRequest && errorField(b) == "reference")
            let (unknown, u) = try await client.json("/api/v1/images/pull", .post, token: alice, body: ["reference": "a:1", "tag": "x"])
            #expect(unknown == .badRequest && errorField(u) == "tag")

            let (loaded, l) = try await client.execute(
                uri: "/api/v1/images/load", method: .post, headers: authHeaders(alice), body: ByteBuffer(repeating: 2, count: 100)
            ) { r in (r.status, TestJSON.object(r.body)) }
            #expect(loaded == .created)
            #expect((l["items"] as? [[String: Any]])?.first?["name"] as? String == "busybox:1.36")
        }
    }

    @Test("a server without an engine: image operations are 409 saying how to configure one, never 5xx")
    func noEngine() async throws {
        var config = try testConfiguration()
        config.imagePolicy = nil
        try await withServer(config) { server, client in
            let t = server.adminToken
            let (status, e) = try await client.importImage("a:1", token: t)
            #expect(status == .conflict && errorMessage(e).contains("--container-engine"))
            #expect(try await client.json("/api/v1/images/pull", .post, token: t, body: ["reference": "busybox"]).0 == .conflict)
            #expect(try await client.json("/api/v1/images", token: t).0 == .ok)
            #expect(try await client.json("/api/v1/images/a%3A1", token: t).0 == .notFound)
            // A workload with an image is refused, naming image, and nothing is stored.
            let before = try await client.workloadCount(token: t)
            let (refused, r) = try await client.json("/api/v1/workloads", .post, token: t, body: ["command": ["true"], "image": "busybox:1.36"])
            #expect(refused == .conflict && errorField(r) == "image" && errorMessage(r).contains("no container engine"))
            #expect(try await client.workloadCount(token: t) == before)
            // One without an image runs as before.
            #expect(try await client.json("/api/v1/workloads", .post, token: t, body: ["command": ["true"]]).0 == .created)
        }
        // With the admin's choice to run image workloads as processes, the image is accepted (not resolved).
        try await withServer { server, client in
            let (status, w) = try await client.json(
                "/api/v1/workloads", .post, token: server.adminToken, body: ["command": ["true"], "image": "busybox:1.36", "hold": true])
            #expect(status == .created && w["imageReference"] == nil)
            // Still a reference, though.
            let (bad, b) = try await client.json("/api/v1/workloads", .post, token: server.adminToken, body: ["command": ["true"], "image": "Not An Image"])
            #expect(bad == .badRequest && errorField(b) == "image")
            // And mounts need a container.
            let (mounts, mb) = try await client.json(
                "/api/v1/workloads", .post, token: server.adminToken,
                body: ["command": ["true"], "image": "busybox:1.36", "mounts": [["source": "data:/", "target": "/data"]]])
            #expect(mounts == .badRequest && errorField(mb) == "mounts")
        }
    }

    @Test("queues carry allowRoot: off by default, set by an admin, shown in the listing")
    func allowRoot() async throws {
        try await withServer { server, client in
            let (created, q) = try await client.json("/api/v1/queues", .post, token: server.adminToken, body: ["name": "rooty", "allowRoot": true])
            #expect(created == .created && q["allowRoot"] as? Bool == true)
            let (_, list) = try await client.json("/api/v1/queues", token: server.adminToken)
            let items = list["items"] as? [[String: Any]] ?? []
            #expect(items.first { $0["name"] as? String == "rooty" }?["allowRoot"] as? Bool == true)
            #expect(items.first { $0["name"] as? String == "default" }?["allowRoot"] as? Bool == false)
            let (bad, b) = try await client.json("/api/v1/queues", .post, token: server.adminToken, body: ["name": "x", "allowRoot": "yes"])
            #expect(bad == .badRequest && errorField(b) == "allowRoot")
        }
    }
}
